"""Retention and archival against a real valkey and the shared PostgreSQL
(each test in a schema of its own, dropped afterwards) or a JSONL folder:
old conversations are copied, verified and only then removed; recent,
running or other-status ones stay; a failing sink removes nothing; a
conversation that changes while it is copied stays; Redis' memory drops
by what was archived."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actionq.agent.spec import AgentSpec, AlwaysConfirm, InlineModel, NeverConfirm
from actionq.archive import ArchivedConversation, Archiver, JsonlSink, PostgresSink, open_sink
from actionq.archive.sinks import ArchiveSink
from actionq.errors import ActionNotFound, ConversationArchived, ConversationNotFound
from actionq.local.processes import free_port
from actionq.models import ConversationStatus, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.store import ActionStore, Claim, WorkerIdentity
from tests.postgres import POSTGRES_URL, own_schema, run_sql

# 5 KiB per message: a conversation of 40 weighs about what 200 small actions do.
BODY = "x" * 5000
WORKER = WorkerIdentity(id="w@host:2:cccc", host="host", pid=2)


@pytest.fixture
def store(aq: ActionQ) -> ActionStore:
    return aq.store


@pytest.fixture
def pg_schema() -> Iterator[str]:
    with own_schema() as name:
        yield name


@pytest.fixture(params=["postgresql", "jsonl"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArchiveSink]:
    if request.param == "jsonl":
        opened = open_sink(f"file://{tmp_path / 'archive'}")
        yield opened
        opened.close()
        return
    with own_schema() as schema:
        opened = open_sink(POSTGRES_URL, schema)
        yield opened
        opened.close()


def conversation_with_messages(aq: ActionQ, messages: int = 3, body: str = "hello") -> str:
    cid = aq.create_conversation().id
    for n in range(messages):
        aq.send_message(cid, f"{n}: {body}")
    return cid


def conversation_with_actions(store: ActionStore, *thoughts: str) -> tuple[str, list[str]]:
    """A conversation whose actions ran and ended (the store's transitions,
    as a worker makes them): idle, ready to archive."""
    cid = store.create_conversation().id
    actions = [store.submit_action(cid, "think", {"thought": t}).action_id for t in thoughts]
    for action in actions:
        claim = store.claim_action(cid, action, WORKER)
        assert isinstance(claim, Claim), claim
        observation = ObservationEvent(
            action_id=action, tool_call_id=claim.tool_call_id, tool_name="think", observation={}
        )
        store.finish_action(claim, observation, WORKER)
    return cid, actions


def keys_of(store: ActionStore, cid: str) -> list[str]:
    """Every Redis key of the conversation (its hash tag) and its index entries."""
    return sorted(str(k) for k in store.redis.scan_iter(match=f"{store.keys.prefix}:{{{cid}}}*"))


def indexed_anywhere(store: ActionStore, cid: str) -> bool:
    indexes = [store.keys.conversation_index()] + [
        store.keys.status_index(s.value) for s in ConversationStatus
    ]
    return any(store.redis.zscore(index, cid) is not None for index in indexes)


def events_json(aq: ActionQ, cid: str) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in aq.all_events(cid)]


def archiver(store: ActionStore, sink: ArchiveSink, **options: Any) -> Archiver:
    return Archiver(store, sink, **({"after_seconds": 1.0, "statuses": ["idle"]} | options))


def test_old_conversations_are_archived_verified_and_removed_the_rest_untouched(
    aq: ActionQ, store: ActionStore, sink: ArchiveSink
) -> None:
    old = conversation_with_messages(aq, 5)
    old_paused = conversation_with_messages(aq, 1)
    aq.pause(old_paused)  # a status not asked for: stays
    old_events, old_info = events_json(aq, old), aq.get_conversation(old)
    # The sweep's clock is set one period past this moment: what changed
    # before it is old enough, what changed after it is not.
    time.sleep(0.05)
    moment = store.server_time()
    time.sleep(0.05)
    recent = conversation_with_messages(aq, 2)
    running = aq.create_conversation().id
    aq.submit_action(running, "think", {"thought": "no worker runs this"})
    assert aq.get_conversation(running).status == ConversationStatus.RUNNING
    kept = {
        cid: (keys_of(store, cid), events_json(aq, cid)) for cid in (old_paused, recent, running)
    }

    report = archiver(store, sink, after_seconds=1.0).sweep(now=moment + 1.0)

    assert (report.archived, report.changed, report.failed) == ([old], [], [])
    assert keys_of(store, old) == [] and not indexed_anywhere(store, old)
    with pytest.raises(ConversationNotFound):
        store.get_conversation(old)
    archived = sink.read(old)
    assert archived is not None
    assert [e.model_dump(mode="json") for e in archived.all_events()] == old_events
    assert archived.conversation == old_info
    for cid, (keys, events) in kept.items():
        assert keys_of(store, cid) == keys and events_json(aq, cid) == events
    # Archiving again finds nothing more (the recent one is still recent).
    assert archiver(store, sink).sweep(now=moment + 1.0).archived == []


def test_its_actions_are_archived_and_found_by_their_id(
    store: ActionStore, sink: ArchiveSink
) -> None:
    # A NUL character, which PostgreSQL's jsonb cannot hold, in one record.
    cid, actions = conversation_with_actions(store, "first", "before\x00after")
    records = [store.get_action(a) for a in actions]
    assert [r.state for r in records] == ["done", "done"]

    assert archiver(store, sink).sweep(now=store.server_time() + 60).archived == [cid]

    for action in actions:
        with pytest.raises(ActionNotFound):
            store.get_action(action)
    archived = sink.read(cid)
    assert archived is not None
    assert [archived.action(a) for a in actions] == records
    assert [sink.find_action(a) for a in actions] == [cid, cid]
    assert sink.find_action("no-such-action") is None
    assert sink.find_action("../" + cid) is None
    sink.remove(cid)
    assert [sink.find_action(a) for a in actions] == [None, None]
    assert sink.read(cid) is None


def test_a_running_conversation_is_never_archived(
    aq: ActionQ, store: ActionStore, sink: ArchiveSink
) -> None:
    running = aq.create_conversation().id
    aq.submit_action(running, "think", {"thought": "queued, no worker"})
    # Even asked for every status that may be archived, and long after.
    report = Archiver(
        store, sink, after_seconds=1, statuses=["finished", "idle", "error", "paused", "stuck"]
    ).sweep(now=store.server_time() + 10_000)
    assert report.archived == [] and keys_of(store, running) != []
    assert sink.read(running) is None


def test_archiving_twice_keeps_one_copy(aq: ActionQ, store: ActionStore, pg_schema: str) -> None:
    cid = conversation_with_messages(aq, 4)
    export = store.export_conversation(cid)
    sink = PostgresSink(POSTGRES_URL, pg_schema)
    try:
        for _ in range(2):
            sink.write(
                ArchivedConversation.from_export(export, archived_at="2026-01-01T00:00:00+00:00")
            )
    finally:
        sink.close()
    rows = run_sql(f"SELECT count(*) FROM {pg_schema}.conversations")
    events = run_sql(f"SELECT count(*) FROM {pg_schema}.events WHERE conversation_id = %s", cid)
    assert len(export.events) == 4 and rows == [(1,)] and events == [(4,)]


def test_an_unreachable_postgresql_removes_nothing(
    aq: ActionQ, store: ActionStore, caplog: pytest.LogCaptureFixture
) -> None:
    cid = conversation_with_messages(aq, 2)
    keys, events = keys_of(store, cid), events_json(aq, cid)
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with caplog.at_level(logging.WARNING, logger="actionq.archive"):
        report = archiver(store, open_sink(nobody, "unreachable")).sweep(
            now=store.server_time() + 60
        )
    assert report.archived == [] and report.failed == [cid]
    assert keys_of(store, cid) == keys and events_json(aq, cid) == events
    assert any(
        "was not archived and nothing was removed" in r.getMessage() and cid in r.getMessage()
        for r in caplog.records
    ), caplog.text


REFUSE_EVERY_EVENT = """
CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'archive writes are refused here'; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON {schema}.events
FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();
"""
# Accepts the write and silently loses an event: only reading it back can tell.
LOSE_SECOND_EVENT = """
CREATE FUNCTION {schema}.lose() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.seq = 2 THEN RETURN NULL; END IF; RETURN NEW; END $$;
CREATE TRIGGER lose BEFORE INSERT ON {schema}.events
FOR EACH ROW EXECUTE FUNCTION {schema}.lose();
"""


@pytest.mark.parametrize(
    "trigger", [REFUSE_EVERY_EVENT, LOSE_SECOND_EVENT], ids=["refused", "lost"]
)
def test_a_refused_or_unfaithful_write_removes_nothing(
    aq: ActionQ, store: ActionStore, pg_schema: str, trigger: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = PostgresSink(POSTGRES_URL, pg_schema)
    assert sink.read("none") is None  # made the schema and its tables
    run_sql(trigger.format(schema=pg_schema))
    cid = conversation_with_messages(aq, 3)
    keys, events = keys_of(store, cid), events_json(aq, cid)
    with caplog.at_level(logging.WARNING, logger="actionq.archive"):
        report = archiver(store, sink).sweep(now=store.server_time() + 60)
    assert report.archived == [] and report.failed == [cid]
    assert keys_of(store, cid) == keys and events_json(aq, cid) == events
    assert "nothing was removed" in caplog.text
    sink.close()


class ChangingSink(JsonlSink):
    """A real JSONL sink; ``change`` runs right after it wrote and verified a
    copy: the conversation changes between its export and its removal."""

    def __init__(self, folder: Path, change: Any) -> None:
        super().__init__(folder)
        self.change = change

    def write(self, archived: ArchivedConversation) -> None:
        super().write(archived)
        self.change(archived.id)


@pytest.mark.parametrize("how", ["new event", "status"])
def test_a_conversation_changed_between_export_and_removal_stays(
    aq: ActionQ, store: ActionStore, tmp_path: Path, how: str
) -> None:
    cid = conversation_with_messages(aq, 2)

    def change(conversation_id: str) -> None:
        if how == "new event":
            aq.send_message(conversation_id, "written while archiving")
        else:
            aq.pause(conversation_id)

    sink = ChangingSink(tmp_path / "archive", change)
    report = archiver(store, sink).sweep(now=store.server_time() + 60)
    assert report.archived == [] and report.changed == [cid]
    texts = [getattr(e, "llm_message", None) for e in aq.all_events(cid)]
    if how == "new event":
        assert texts[-1] is not None and texts[-1].content == "written while archiving"
    else:
        assert aq.get_conversation(cid).status == ConversationStatus.PAUSED
    assert sink.read(cid) is None  # the stale copy is dropped


def memory_usage(store: ActionStore, cid: str) -> int:
    return sum(int(store.redis.memory_usage(key) or 0) for key in keys_of(store, cid))


def test_redis_memory_drops_by_what_was_archived(
    aq: ActionQ, store: ActionStore, tmp_path: Path
) -> None:
    cids = [conversation_with_messages(aq, 40, BODY) for _ in range(5)]
    used = [memory_usage(store, cid) for cid in cids]
    assert all(u > 40 * 5000 for u in used)
    info_before = int(store.redis.info("memory")["used_memory"])
    report = archiver(store, open_sink(str(tmp_path / "archive")), batch=100).sweep(
        now=store.server_time() + 60
    )
    assert sorted(report.archived) == sorted(cids)
    assert [memory_usage(store, cid) for cid in cids] == [0] * 5
    freed = info_before - int(store.redis.info("memory")["used_memory"])
    # The server's own count agrees (allocator slack aside).
    assert freed >= 0.8 * sum(used), (freed, sum(used))


def test_a_sweep_looks_at_no_more_than_its_batch_and_goes_on_next_time(
    aq: ActionQ, store: ActionStore, tmp_path: Path
) -> None:
    cids = [aq.create_conversation().id for _ in range(7)]
    worker = archiver(store, open_sink(str(tmp_path / "archive")), batch=3)
    later = store.server_time() + 60
    rounds = [sorted(worker.sweep(now=later).archived) for _ in range(3)]
    assert [len(r) for r in rounds] == [3, 3, 1]
    assert sorted(cid for r in rounds for cid in r) == sorted(cids)


def test_the_archived_conversation_reads_as_before_and_refuses_changes(
    settings: Settings, store: ActionStore, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    with ActionQ(settings.model_copy(update={"archive_url": str(archive)})) as aq:
        cid, (action,) = conversation_with_actions(store, "a thought")
        for n in range(3):
            aq.send_message(cid, f"{n}: hello")
        before = (
            aq.get_conversation(cid),
            events_json(aq, cid),
            aq.list_events(cid, 1, 2),
            aq.get_action(action),
        )
        event_id = aq.all_events(cid)[2].id
        assert archiver(store, JsonlSink(archive)).sweep(now=store.server_time() + 60).archived
        assert (
            aq.get_conversation(cid),
            events_json(aq, cid),
            aq.list_events(cid, 1, 2),
            aq.get_action(action),
        ) == before
        assert aq.find_event(cid, event_id) == aq.all_events(cid)[2] and aq.is_archived(cid)
        for change in (
            lambda: aq.send_message(cid, "no"),
            lambda: aq.submit_action(cid, "think", {"thought": "no"}),
            lambda: aq.pause(cid),
            lambda: aq.resume(cid),
            lambda: aq.run(cid),
            lambda: aq.delete_conversation(cid),
            lambda: aq.create_conversation(cid),
            lambda: aq.retry_action(action, force=True),
        ):
            with pytest.raises(ConversationArchived, match="archived; read-only"):
                change()
        assert keys_of(store, cid) == [] and not indexed_anywhere(store, cid)
        assert store.redis.hlen(store.keys.action_index()) == 0


def test_an_event_with_a_nul_character_is_archived_to_postgresql_as_it_was(
    aq: ActionQ, store: ActionStore, pg_schema: str
) -> None:
    cid = conversation_with_messages(aq, 2, body="before\x00after")  # jsonb cannot hold \x00
    events = events_json(aq, cid)
    sink = PostgresSink(POSTGRES_URL, pg_schema)
    try:
        assert archiver(store, sink).sweep(now=store.server_time() + 60).archived == [cid]
        archived = sink.read(cid)
    finally:
        sink.close()
    assert archived is not None
    assert [e.model_dump(mode="json") for e in archived.all_events()] == events
    assert "\x00" in events[-1]["llm_message"]["content"]


def test_deleting_a_live_conversation_drops_an_older_archived_copy(
    settings: Settings, store: ActionStore, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    with ActionQ(settings.model_copy(update={"archive_url": str(archive)})) as aq:
        cid = conversation_with_messages(aq, 1)
        # A copy made, then the conversation went on (an archival it changed during).
        JsonlSink(archive).write(
            ArchivedConversation.from_export(store.export_conversation(cid), archived_at="x")
        )
        aq.send_message(cid, "later")
        aq.delete_conversation(cid)
        with pytest.raises(ConversationNotFound):
            aq.get_conversation(cid)


def test_a_role_that_may_only_read_removes_nothing(
    aq: ActionQ, store: ActionStore, pg_schema: str
) -> None:
    """The archive's tables exist and the role may read them, not insert:
    the write is refused (and a role without CREATE can still use tables
    that exist)."""
    owner = PostgresSink(POSTGRES_URL, pg_schema)
    assert owner.read("none") is None  # the owner made them
    owner.close()
    role = f"{pg_schema}_reader"
    run_sql(f"CREATE ROLE {role} LOGIN")
    try:
        run_sql(f"GRANT USAGE ON SCHEMA {pg_schema} TO {role}")
        run_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {pg_schema} TO {role}")
        reader = PostgresSink(POSTGRES_URL.replace("postgres@", f"{role}@"), pg_schema)
        assert reader.read("none") is None  # it may read
        cid = conversation_with_messages(aq, 2)
        keys, events = keys_of(store, cid), events_json(aq, cid)
        report = archiver(store, reader).sweep(now=store.server_time() + 60)
        reader.close()
        assert report.archived == [] and report.failed == [cid]
        assert keys_of(store, cid) == keys and events_json(aq, cid) == events
        assert run_sql(f"SELECT count(*) FROM {pg_schema}.conversations") == [(0,)]
    finally:
        run_sql(f"DROP OWNED BY {role}")
        run_sql(f"DROP ROLE {role}")


def test_an_archived_agent_keeps_its_spec_and_policy_but_not_its_sealed_key(
    settings: Settings, store: ActionStore, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    spec = AgentSpec(
        kind="llm",
        model=InlineModel(model="openai/x", api_key_sealed="gAAAA-sealed"),
        confirmation_policy=AlwaysConfirm(),
    )
    with ActionQ(settings.model_copy(update={"archive_url": str(archive)})) as aq:
        cid = aq.create_conversation(agent=spec).id
        aq.set_confirmation_policy(cid, NeverConfirm())
        before = aq.agent_spec(cid)
        assert before is not None and before[0].model is not None
        assert archiver(store, JsonlSink(archive)).sweep(now=store.server_time() + 60).archived
        after = aq.agent_spec(cid)
        assert after is not None and after[0].model is not None
        assert after[1] == before[1] == NeverConfirm().model_dump(mode="json")
        assert after[0].model.api_key_sealed is None
        assert after[0].model_copy(update={"model": before[0].model}) == before[0]
        assert "gAAAA-sealed" not in (archive / f"{cid}.jsonl").read_text()
        # The folder and the file are the owner's only.
        assert (
            archive.stat().st_mode & 0o077,
            (archive / f"{cid}.jsonl").stat().st_mode & 0o077,
        ) == (0, 0)


def test_archive_urls_name_their_sink(tmp_path: Path) -> None:
    from actionq.errors import ConfigurationError

    assert isinstance(open_sink(f"file://{tmp_path}"), JsonlSink)
    assert isinstance(open_sink(str(tmp_path)), JsonlSink)
    assert isinstance(open_sink("postgres://u@h/db", "s"), PostgresSink)
    for wrong in ("file://elsewhere/x", "s3://bucket/x"):
        with pytest.raises(ConfigurationError, match="ACTIONQ_ARCHIVE_URL"):
            open_sink(wrong)


def test_a_conversation_the_sink_refuses_does_not_hold_up_the_others(
    aq: ActionQ, store: ActionStore, pg_schema: str
) -> None:
    sink = PostgresSink(POSTGRES_URL, pg_schema)
    assert sink.read("none") is None  # made the schema and its tables
    refused, other = conversation_with_messages(aq, 1), conversation_with_messages(aq, 1)
    run_sql(
        f"""CREATE FUNCTION {pg_schema}.refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.conversation_id = '{refused}' THEN RAISE EXCEPTION 'not this one'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER refuse_one BEFORE INSERT ON {pg_schema}.events
        FOR EACH ROW EXECUTE FUNCTION {pg_schema}.refuse_one();"""
    )
    worker = archiver(store, sink)
    later = store.server_time() + 60
    first, second, third = (worker.sweep(now=later) for _ in range(3))
    sink.close()
    assert (first.failed, first.archived) == ([refused], [])
    assert second.archived == [other]
    assert third.failed == [refused] and keys_of(store, refused) != []


def test_a_copy_of_the_first_format_still_reads_with_no_actions(
    aq: ActionQ, store: ActionStore, tmp_path: Path
) -> None:
    """actionq-archive/1 (before actions were archived): no action lines and
    no actions_count; its digest is the one the /2 formula gives with none."""
    sink = JsonlSink(tmp_path / "archive")
    cid = conversation_with_messages(aq, 2)
    sink.write(ArchivedConversation.from_export(store.export_conversation(cid), archived_at="x"))
    path = tmp_path / "archive" / f"{cid}.jsonl"
    header, *events = path.read_text().splitlines()
    old = json.loads(header) | {"format": "actionq-archive/1"}
    del old["actions_count"]
    path.write_text("\n".join([json.dumps(old), *events]) + "\n")
    archived = sink.read(cid)
    assert archived is not None and archived.actions == []
    assert [e.model_dump(mode="json") for e in archived.all_events()] == events_json(aq, cid)
