"""The console's listing in the store: the per-status index stays exactly the
set of conversations with each status through every transition, a page
follows the index newest first, every conversation once, a crash is kept on
its conversation until it leaves error, and a page of 10,000 conversations
costs a bounded number of Redis commands (counted by the server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from actionq.agent.spec import AgentSpec, ScriptedTurn
from actionq.crashes.stop import crash_action
from actionq.errors import InvalidArgumentsError
from actionq.models import (
    ConversationErrorEvent,
    ConversationStatus,
    ErrorCause,
    ObservationEvent,
)
from actionq.service import ActionQ
from actionq.store import ActionStore, Claim, WorkerIdentity
from actionq.store.agent import StepClaim
from tests.helpers import ValkeyServer

WORKER = WorkerIdentity(id="w@host:2:bbbb", host="host", pid=2)


@pytest.fixture
def store(aq: ActionQ) -> ActionStore:
    return aq.store


def index_by_status(store: ActionStore) -> dict[str, set[str]]:
    return {
        status.value: set(store.redis.zrange(store.keys.status_index(status.value), 0, -1))
        for status in ConversationStatus
    }


def real_statuses(store: ActionStore) -> dict[str, set[str]]:
    """Each conversation's status as its own hash has it."""
    by_status: dict[str, set[str]] = {status.value: set() for status in ConversationStatus}
    for cid in store.iter_conversation_ids():
        status = store.redis.hget(store.keys.conversation(cid), "status")
        if status is not None:
            by_status[str(status)].add(cid)
    return by_status


def assert_index_exact(store: ActionStore) -> None:
    real = real_statuses(store)
    assert index_by_status(store) == real
    for status, members in real.items():
        assert store.count_conversations_with_status(status) == len(members)
        # Scored as the main index, so a status's page is in creation order too.
        for cid in members:
            assert store.redis.zscore(store.keys.status_index(status), cid) == (
                store.redis.zscore(store.keys.conversation_index(), cid)
            )


def finish(store: ActionStore, cid: str, aid: str) -> None:
    claim = store.claim_action(cid, aid, WORKER)
    assert isinstance(claim, Claim), claim
    event = ObservationEvent(
        action_id=aid, tool_call_id=claim.tool_call_id, tool_name=claim.tool, observation={}
    )
    store.finish_action(claim, event, WORKER)


def test_the_status_index_is_exact_through_every_transition(store: ActionStore) -> None:
    cids = [store.create_conversation().id for _ in range(4)]
    assert_index_exact(store)
    assert store.count_conversations_with_status("idle") == 4

    ran = store.submit_action(cids[0], "terminal", {"command": "a"}).action_id  # -> running
    crashed = store.submit_action(cids[1], "terminal", {"command": "b"}).action_id
    store.submit_action(cids[2], "terminal", {"command": "c"})
    assert_index_exact(store)
    assert store.count_conversations_with_status("running") == 3

    finish(store, cids[0], ran)  # -> idle
    store.claim_action(cids[1], crashed, WORKER)
    crash_action(store, store.get_action(crashed, cids[1]), ErrorCause.WORKER_LOST, signal=9)
    store.pause_conversation(cids[2])
    assert_index_exact(store)
    assert index_by_status(store)["error"] == {cids[1]}
    assert index_by_status(store)["paused"] == {cids[2]}

    store.resume_conversation(cids[1])  # nothing queued: -> idle
    store.delete_conversation(cids[3])
    assert_index_exact(store)
    assert store.count_conversations_with_status("error") == 0
    store.delete_conversation(cids[1])
    assert_index_exact(store)
    assert store.count_conversations_with_status("idle") == 1  # cids[0]


def test_a_crash_is_kept_on_its_conversation_until_it_leaves_error(
    store: ActionStore,
) -> None:
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "x"}).action_id
    store.claim_action(cid, aid, WORKER)
    crash_action(store, store.get_action(aid, cid), ErrorCause.WORKER_LOST, signal=9, exitcode=-9)

    error = store.get_conversation(cid).error
    assert error is not None
    assert (error.cause, error.signal, error.exitcode, error.action_id) == (
        "worker_lost",
        9,
        -9,
        aid,
    )
    [event] = [e for e in store.all_events(cid) if e.kind == "AgentErrorEvent"]
    assert error.at == event.timestamp

    store.resume_conversation(cid)
    assert store.get_conversation(cid).error is None


def test_pages_list_every_conversation_once_newest_first(store: ActionStore) -> None:
    cids = [store.create_conversation().id for _ in range(23)]
    for cid in cids[::3]:  # 8 of them running
        store.submit_action(cid, "terminal", {"command": "a"})

    created_meanwhile: list[str] = []

    def every_page(status: str | None, limit: int) -> list[str]:
        listed: list[str] = []
        after = None
        while True:
            page = store.page_conversations(status, after, limit)
            assert len(page.items) <= limit
            assert page.total == (
                store.count_conversations()
                if status is None
                else store.count_conversations_with_status(status)
            )
            listed += [c.id for c in page.items]
            if page.next_page_id is None:
                return listed
            after = page.next_page_id
            if status is None and not created_meanwhile:
                # A conversation created meanwhile goes on top and shifts no page.
                created_meanwhile.append(store.create_conversation().id)

    assert every_page(None, 5) == cids[::-1]
    assert every_page(None, 7) == created_meanwhile + cids[::-1]
    assert every_page("running", 3) == cids[::3][::-1]
    idle = [c for c in cids[::-1] if c not in cids[::3]]
    assert every_page("idle", 100) == created_meanwhile + idle
    assert every_page("error", 10) == []


def test_a_page_goes_on_after_its_last_row_leaves_the_index(store: ActionStore) -> None:
    cids = [store.create_conversation().id for _ in range(6)]
    first = store.page_conversations("idle", None, 3)
    assert [c.id for c in first.items] == cids[::-1][:3]
    store.delete_conversation(cids[3])  # the first page's last row
    rest = store.page_conversations("idle", first.next_page_id, 3)
    assert [c.id for c in rest.items] == cids[::-1][3:]
    assert rest.next_page_id is None


def test_a_page_id_that_is_not_one_is_refused(store: ActionStore) -> None:
    for bad in ("x", "12", "nan:c1", "abc:c1"):
        with pytest.raises(InvalidArgumentsError):
            store.page_conversations(None, bad, 10)


def test_backfill_indexes_conversations_older_than_the_index_once(store: ActionStore) -> None:
    cids = [store.create_conversation().id for _ in range(7)]
    store.submit_action(cids[0], "terminal", {"command": "a"})
    # As a store written before the index: no status sets, no revisions, no
    # marker, and a stale entry that the backfill must drop.
    for status in ConversationStatus:
        store.redis.delete(store.keys.status_index(status.value))
    store.redis.delete(store.keys.status_revisions(), store.keys.status_index_version())
    for cid in cids:
        store.redis.hdel(store.keys.conversation(cid), "status_rev")
    store.redis.zadd(store.keys.status_index("error"), {cids[1]: 1.0})
    # Version 1's sets, under their old names: the backfill removes them.
    store.redis.zadd(store.keys.legacy_status_index("idle"), {cids[2]: 1.0})

    assert store.backfill_status_index(batch=3) == 7
    assert_index_exact(store)
    assert not store.redis.exists(store.keys.legacy_status_index("idle"))
    assert store.backfill_status_index() is None  # the marker: done once
    assert_index_exact(store)


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[redis.Redis]:
    """A server of this test's own, so the command counts are its alone."""
    server = ValkeyServer(tmp_path / "valkey")
    server.start()
    client = redis.Redis.from_url(server.url(0), decode_responses=True)
    yield client
    client.close()
    server.stop()


def commands_run(client: redis.Redis, read: object) -> int:
    """How many commands the server ran for ``read()`` (scripts' own included)."""
    client.config_resetstat()
    assert callable(read)
    read()
    stats = client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
    )


def test_a_page_of_10000_conversations_costs_a_bounded_number_of_commands(
    own_valkey: redis.Redis,
) -> None:
    store = ActionStore(own_valkey)
    store.create_conversation("c00000")  # loads the script the pipelines call
    pipe = own_valkey.pipeline(transaction=False)
    now = time.time()
    for n in range(1, 10_000):
        cid = f"c{n:05d}"
        pipe.zadd(store.keys.conversation_index(), {cid: now + n})
        store.evalsha_in(
            pipe,
            "create_conversation",
            [store.keys.conversation(cid), store.keys.agent(cid)],
            [cid, "2026-01-01T00:00:00Z", "", 0, ""],
        )
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    assert store.count_conversations_with_status("idle") == 10_000

    limit = 50
    started = time.perf_counter()
    first = store.page_conversations(None, None, limit)
    elapsed = time.perf_counter() - started
    assert [c.id for c in first.items] == [f"c{n:05d}" for n in range(9_999, 9_999 - limit, -1)]
    assert first.total == 10_000
    print(f"\nfirst console page of {limit} of 10,000 conversations: {elapsed * 1000:.1f} ms")

    # A page reads its ids, the count, and each row's hash and two list
    # lengths: 3 per row plus a constant, whatever the number of conversations.
    bound = 3 * limit + 5
    assert commands_run(own_valkey, lambda: store.page_conversations(None, None, limit)) <= bound
    second = first.next_page_id
    assert commands_run(own_valkey, lambda: store.page_conversations("idle", second, limit)) <= (
        bound
    )
    # A status nobody has: no scan of the 10,000 to find out.
    assert commands_run(own_valkey, lambda: store.page_conversations("error", None, limit)) <= 5
    openhands_page = commands_run(
        own_valkey, lambda: store.search_conversations(0, limit, "error", True)
    )
    assert openhands_page <= 5
    assert (
        commands_run(own_valkey, lambda: store.search_conversations(0, limit, "idle", True))
        <= bound
    )
    assert commands_run(own_valkey, lambda: store.count_conversations_with_status("idle")) == 1


def test_the_agent_loops_transitions_keep_the_index_and_the_error(store: ActionStore) -> None:
    spec = AgentSpec(kind="scripted", turns=[ScriptedTurn(text="hi")]).model_dump_json()
    cid = store.create_conversation_checked(agent_spec_json=spec)[0].id
    started = store.run_conversation(cid)  # -> running, its first step queued
    assert started.status == ConversationStatus.RUNNING and started.step_task_id
    assert_index_exact(store)

    claim = store.claim_step(cid, started.step_task_id, WORKER)
    assert isinstance(claim, StepClaim), claim
    failure = ConversationErrorEvent(code="RateLimitError", detail="the model refused")
    assert store.end_run(claim, WORKER, failure, ConversationStatus.ERROR)
    assert_index_exact(store)
    assert index_by_status(store)["error"] == {cid}
    error = store.get_conversation(cid).error
    assert error is not None
    assert (error.cause, error.signal, error.action_id) == ("RateLimitError", None, None)
    assert error.at == failure.timestamp

    assert store.run_conversation(cid).status == ConversationStatus.RUNNING  # run leaves error
    assert store.get_conversation(cid).error is None
    assert_index_exact(store)
    store.pause_conversation(cid, interrupt=True)
    assert_index_exact(store)
    assert index_by_status(store)["paused"] == {cid}
