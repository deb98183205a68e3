"""Hostile and broken input: clear errors, nothing lost, nothing runs that should not."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from actionq.errors import InvalidArgumentsError, StoreUnavailableError
from actionq.local.embedded import EmbeddedServer
from actionq.models import ActionState, AgentErrorEvent, ErrorCause, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.tools import conversation_workspace
from tests.conftest import WorkerFactory
from tests.events import count_lines, only_error, terminal_events
from tests.helpers import free_port


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_too_deep_or_too_large_arguments_are_refused_and_store_nothing(aq: ActionQ) -> None:
    cid = aq.create_conversation().id
    with pytest.raises(InvalidArgumentsError, match="nested deeper than 32"):
        aq.submit_action(cid, "terminal", {"command": "ls", "x": nested(100_000)})
    with pytest.raises(InvalidArgumentsError, match="ACTIONQ_MAX_ARGUMENTS_BYTES"):
        aq.submit_action(cid, "terminal", {"command": "x" * 300_000})
    assert aq.list_events(cid).items == []
    # Just inside the limits is fine.
    aq.submit_action(cid, "terminal", {"command": "ls", "x": nested(31)})
    assert len(aq.list_events(cid).items) >= 1


def test_messages_for_unknown_actions_or_with_bad_arguments_run_nothing(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    run = aq.celery_app.send_task
    run("actionq.run_action", args=[cid, str(uuid.uuid4())], queue="actionq")  # no such action
    run("actionq.run_action", args=["no-such-conversation", "x"], queue="actionq")
    run("actionq.run_action", args=[], queue="actionq")  # wrong arity
    run("actionq.run_action", args=[cid, {"not": "an id"}], queue="actionq")  # wrong type
    run("actionq.no_such_task", args=[1], queue="actionq")  # unregistered task

    marker = workdir / "side-effect.log"
    action = aq.submit_action(
        cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0, "line": "real"}
    )
    assert aq.wait_for_action(action.id, 30).terminal_kind == "ObservationEvent"
    assert marker.read_text() == "real\n"
    assert worker.is_alive()
    assert [e.kind for e in aq.store.all_events(cid)].count("ActionEvent") == 1


def test_file_tools_cannot_escape_the_workspace(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    start_worker()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    cid = aq.create_conversation().id
    workspace = conversation_workspace(settings, cid)
    (workspace / "link").symlink_to(tmp_path)
    up = os.path.relpath(tmp_path, workspace)  # '../../..': as far as the secret
    attempts = [
        ("file_read", {"path": f"{up}/secret.txt"}, "'..' leads above"),
        ("file_read", {"path": "link/secret.txt"}, "a symlink on the way points outside"),
        ("file_write", {"path": "../escaped.txt", "content": "x"}, "'..' leads above"),
        ("file_write", {"path": "link/escaped.txt", "content": "x"}, "a symlink on the way"),
        ("file_edit", {"path": "link/secret.txt", "old_str": "do", "new_str": "x"}, "symlink"),
    ]
    actions = [aq.submit_action(cid, tool, args) for tool, args, _ in attempts]
    absolute = aq.submit_action(cid, "file_read", {"path": str(secret)})
    inside = aq.submit_action(cid, "file_write", {"path": "sub/ok.txt", "content": "fine"})
    for action in [*actions, absolute, inside]:
        aq.wait_for_action(action.id, 30)

    for action, (_, _, why) in zip(actions, attempts, strict=True):
        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
        assert "outside the workspace" in error.error and why in error.error, error.error
    assert "is absolute; paths are relative to" in only_error(aq, cid, absolute.id).error
    assert (
        not (tmp_path / "escaped.txt").exists() and not (workspace.parent / "escaped.txt").exists()
    )
    assert secret.read_text() == "do not read"
    assert isinstance(terminal_events(aq, cid, inside.id)[0], ObservationEvent)
    assert (workspace / "sub" / "ok.txt").read_text() == "fine"


def test_redis_away_gives_clear_errors_and_recovery_when_it_returns(
    tmp_path: Path, start_worker: WorkerFactory, workdir: Path
) -> None:
    server = EmbeddedServer(tmp_path / "redis", port=free_port())
    url = server.start()
    try:
        aq = ActionQ(Settings(redis_url=url, workdir=str(workdir)))
        worker = start_worker(ACTIONQ_REDIS_URL=url)
        cid = aq.create_conversation().id
        first = aq.submit_action(cid, "terminal", {"command": "echo before"})
        aq.wait_for_action(first.id, 30)

        server.stop()
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            aq.create_conversation()
        with pytest.raises(StoreUnavailableError):
            aq.submit_action(cid, "terminal", {"command": "echo during"})

        server.start()
        marker = workdir / "after.log"
        after = aq.submit_action(
            cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0}
        )
        assert aq.wait_for_action(after.id, 60).terminal_kind == "ObservationEvent"
        assert count_lines(marker) == 1
        # Only what was acknowledged was stored: the refused submit left no trace.
        kinds = [e.kind for e in aq.store.all_events(cid)]
        assert kinds.count("ActionEvent") == 2
        assert aq.get_action(first.id).state == ActionState.DONE
        assert aq.store.count_conversations() == 1
        assert worker.is_alive()
        assert not any(isinstance(e, AgentErrorEvent) for e in aq.store.all_events(cid))
        aq.close()
    finally:
        server.stop()
        os.environ.pop("ACTIONQ_REDIS_URL", None)
