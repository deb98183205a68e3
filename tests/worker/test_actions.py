"""Normal and tool-error paths, and refused messages, with a real prefork worker."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from kombu import Connection, Exchange, Producer

from actionq.models import (
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    ObservationEvent,
)
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.tools import conversation_workspace
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, only_error, terminal_events
from tests.helpers import wait_for


def wait_ended(aq: ActionQ, action_id: str, timeout: float = 30):
    return aq.wait_for_action(action_id, timeout)


def test_normal_actions_each_get_one_observation(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    commands = ["echo hello", "echo -n two; exit 3", "printf 'x%.0s' $(seq 1 100000)"]
    actions = [aq.submit_action(cid, "terminal", {"command": c}) for c in commands]
    write = aq.submit_action(cid, "file_write", {"path": "notes/a.txt", "content": "hi"})
    read = aq.submit_action(cid, "file_read", {"path": "notes/a.txt"})
    for action in [*actions, write, read]:
        assert wait_ended(aq, action.id).state == ActionState.DONE

    outputs = []
    for action in actions:
        [event] = terminal_events(aq, cid, action.id)
        assert isinstance(event, ObservationEvent)
        outputs.append(event.observation)
    assert outputs[0]["output"] == "hello\n" and outputs[0]["exit_code"] == 0
    assert outputs[1]["output"] == "two" and outputs[1]["exit_code"] == 3
    big = outputs[2]
    assert big["truncated"] is True and "truncated ..." in big["output"]
    assert len(big["output"].encode()) < 70 * 1024
    [read_event] = terminal_events(aq, cid, read.id)
    assert read_event.observation["content"] == "hi"  # type: ignore[union-attr]
    assert (conversation_workspace(settings, cid) / "notes/a.txt").read_text() == "hi"
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE
    assert_log_consistent(aq, cid)

    done = aq.submit_action(cid, "finish", {"message": "all done"})
    wait_ended(aq, done.id)
    assert aq.get_conversation(cid).status == ConversationStatus.FINISHED


def test_terminal_timeout_kills_the_command(aq: ActionQ, start_worker: WorkerFactory) -> None:
    start_worker()
    cid = aq.create_conversation().id
    action = aq.submit_action(cid, "terminal", {"command": "echo start; sleep 30", "timeout": 1})
    wait_ended(aq, action.id)
    [event] = terminal_events(aq, cid, action.id)
    assert isinstance(event, ObservationEvent)
    assert event.observation["timed_out"] is True
    assert event.observation["exit_code"] == 124
    assert event.observation["output"] == "start\n"


def test_tool_errors_are_reported_and_the_conversation_goes_on(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    raised = aq.submit_action(cid, "raise_error", {"message": "disk on fire"})
    unknown = aq.submit_action(cid, "no_such_tool", {"x": 1})
    invalid = aq.submit_action(cid, "terminal", {"cmd": "ls"})
    escape = aq.submit_action(cid, "file_read", {"path": "../../etc/passwd"})
    after = aq.submit_action(cid, "terminal", {"command": "echo still here"})
    for action in (raised, unknown, invalid, escape, after):
        wait_ended(aq, action.id)

    error = only_error(aq, cid, raised.id)
    assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
    assert "RuntimeError: disk on fire" in error.error
    assert error.classification.retryable is True
    error = only_error(aq, cid, unknown.id)
    assert error.detail.cause == ErrorCause.UNKNOWN_TOOL
    assert "unknown tool 'no_such_tool'" in error.error and "terminal" in error.error
    error = only_error(aq, cid, invalid.id)
    assert error.detail.cause == ErrorCause.INVALID_ARGUMENTS
    assert "command" in error.error and "cmd" in error.error
    error = only_error(aq, cid, escape.id)
    assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
    assert "outside the workspace ('..' leads above" in error.error

    [last] = terminal_events(aq, cid, after.id)
    assert isinstance(last, ObservationEvent) and last.observation["output"] == "still here\n"
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE  # never `error`
    assert worker.is_alive()
    assert_log_consistent(aq, cid)


class _Exploit:
    """Unpickling this would run a shell command."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def test_pickled_message_is_refused_and_runs_nothing(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path, redis_url: str
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    # Stored and made active, but not sent: the only message will be the pickle.
    submitted = aq.store.submit_action(
        cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0}
    )
    pwned = workdir / "pwned"
    body = ((cid, submitted.action_id, _Exploit(str(pwned))), {}, {})
    with Connection(redis_url) as conn:
        producer = Producer(conn.channel(), exchange=Exchange("actionq", type="direct"))
        producer.publish(
            pickle.dumps(body),
            routing_key="actionq",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "actionq.run_action", "id": submitted.action_id, "lang": "py"},
            declare=[],
        )

    wait_for(
        lambda: "ContentDisallowed" in worker.log() or "disallowed" in worker.log(),
        20,
        what="the worker to refuse the pickled message",
    )
    assert not pwned.exists()
    assert count_lines(marker) == 0
    assert aq.store.get_action(submitted.action_id, cid).state == ActionState.PENDING
    assert worker.is_alive()

    # The same action, sent properly, runs once.
    aq.dispatch(cid, submitted.action_id)
    wait_ended(aq, submitted.action_id)
    assert count_lines(marker) == 1
    assert not any(
        isinstance(e, AgentErrorEvent) for e in terminal_events(aq, cid, submitted.action_id)
    )


def test_memory_cap_without_cgroups_fails_only_the_leaking_command(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    """Without a memory cgroup the cap is RLIMIT_AS: the allocation fails, the
    command reports it and exits non-zero; nothing was killed, so it is an
    ordinary observation (with a cgroup: tests/worker/test_memory_cap.py)."""
    worker = start_worker(ACTIONQ_ACTION_MEMORY_LIMIT_MB="200", ACTIONQ_TOOL_CGROUPS="false")
    cid = aq.create_conversation().id
    leak = aq.submit_action(
        cid, "terminal", {"command": "python3 -c 'x = bytearray(600 * 1024 * 1024)'"}
    )
    after = aq.submit_action(cid, "terminal", {"command": "echo fine"})
    wait_ended(aq, after.id)

    [event] = terminal_events(aq, cid, leak.id)
    assert isinstance(event, ObservationEvent)
    assert event.observation["exit_code"] != 0
    assert "MemoryError" in event.observation["output"]
    [ok] = terminal_events(aq, cid, after.id)
    assert isinstance(ok, ObservationEvent) and ok.observation["output"] == "fine\n"
    assert worker.is_alive()
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE
