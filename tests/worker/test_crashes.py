"""Crash paths with real prefork workers, really SIGKILLed."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from actionq.models import ActionState, ConversationStatus, ErrorCause
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.store.connect import sync_client
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, only_error, terminal_events
from tests.helpers import wait_for


def wait_status(aq: ActionQ, conversation_id: str, status: ConversationStatus, timeout: float = 30):
    return wait_for(
        lambda: aq.get_conversation(conversation_id).status == status,
        timeout,
        what=f"conversation {conversation_id} to be {status.value}",
    )


def assert_stays(predicate, seconds: float, what: str) -> None:
    """Watch ``predicate`` for ``seconds`` (to prove that something does NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.2)


def unacked_messages(redis_url: str) -> int:
    client = sync_client(redis_url)  # a redis+sentinel:// store too (test_sentinel.py)
    try:
        return int(client.hlen("unacked")) + int(client.llen("actionq"))
    finally:
        client.close()


@pytest.mark.parametrize("how", ["shell_kills_its_parent", "python_tool_kills_itself"])
def test_killed_child_becomes_agent_error_and_never_reruns(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path, redis_url: str, how: str
) -> None:
    worker = start_worker()
    conversation = aq.create_conversation()
    marker = workdir / "side-effect.log"
    if how == "shell_kills_its_parent":
        tool, arguments = "terminal", {"command": f"echo ran >> {marker}; kill -9 $PPID; sleep 3"}
    else:
        tool, arguments = "kill_own_process", {"marker_file": str(marker)}

    action = aq.submit_action(conversation.id, tool, arguments)
    wait_status(aq, conversation.id, ConversationStatus.ERROR)

    error = only_error(aq, conversation.id, action.id)
    assert error.detail.cause == ErrorCause.WORKER_LOST
    assert error.detail.signal == signal.SIGKILL
    assert error.detail.killed_by is None  # a kill -9: the OOM watch claims nothing
    assert error.classification.kind == "crash"
    assert error.tool_call_id == action.tool_call_id
    assert count_lines(marker) == 1
    # Past the 5 s visibility timeout (and kombu's 1 s restore scan), the
    # message must not come back: it was acked, not requeued.
    assert_stays(
        lambda: count_lines(marker) == 1 and aq.get_action(action.id).attempt == 1,
        7,
        "the crashed action ran again",
    )
    assert unacked_messages(redis_url) == 0
    assert len(terminal_events(aq, conversation.id, action.id)) == 1
    assert aq.get_conversation(conversation.id).status == ConversationStatus.ERROR
    assert_log_consistent(aq, conversation.id)
    assert worker.is_alive()  # the parent survived and replaced its child


def test_whole_worker_killed_redelivery_runs_nothing(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    first = start_worker("first")
    conversation = aq.create_conversation()
    marker = workdir / "side-effect.log"
    action = aq.submit_action(
        conversation.id, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60}
    )
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")
    first.kill_everything()

    # The second worker neither sweeps nor recovers at start, so only the
    # redelivery guard can catch this: the message comes back after the
    # visibility timeout and finds the action claimed by a dead owner.
    start_worker("second", ACTIONQ_RECOVER_ON_START="false", ACTIONQ_SWEEP_INTERVAL="3600")
    wait_status(aq, conversation.id, ConversationStatus.ERROR, timeout=40)

    error = only_error(aq, conversation.id, action.id)
    assert error.detail.cause == ErrorCause.REDELIVERED
    assert count_lines(marker) == 1
    assert aq.get_action(action.id).attempt == 2
    assert_log_consistent(aq, conversation.id)


def test_hard_time_limit_errors_once_without_requeue(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path, redis_url: str
) -> None:
    start_worker(ACTIONQ_ACTION_TIME_LIMIT="2")
    conversation = aq.create_conversation()
    marker = workdir / "side-effect.log"
    action = aq.submit_action(
        conversation.id, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60}
    )
    wait_status(aq, conversation.id, ConversationStatus.ERROR)

    error = only_error(aq, conversation.id, action.id)
    assert error.detail.cause == ErrorCause.TIME_LIMIT
    assert_stays(
        lambda: (
            count_lines(marker) == 1 and len(terminal_events(aq, conversation.id, action.id)) == 1
        ),
        7,
        "the timed-out action ran again or ended twice",
    )
    assert unacked_messages(redis_url) == 0
    assert_log_consistent(aq, conversation.id)


def test_action_outliving_visibility_timeout_completes_once(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    start_worker("one")
    start_worker("two")
    conversation = aq.create_conversation()
    marker = workdir / "side-effect.log"
    action = aq.submit_action(
        conversation.id, "sleep_after_mark", {"marker_file": str(marker), "seconds": 9}
    )
    wait_for(lambda: aq.get_action(action.id).state == "done", 40, what="the action to finish")

    terminal = terminal_events(aq, conversation.id, action.id)
    assert [e.kind for e in terminal] == ["ObservationEvent"]
    assert count_lines(marker) == 1
    # It really was delivered again while it ran (9 s > 5 s visibility timeout).
    assert aq.get_action(action.id).attempt >= 2
    assert aq.get_conversation(conversation.id).status == ConversationStatus.IDLE
    assert_log_consistent(aq, conversation.id)


def test_worker_start_up_recovers_a_conversation_left_running(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    """State left by a crash of everything: a claim by a worker that no longer
    exists. The next worker to start errors it, and the action queued behind it,
    before it takes any work."""
    from actionq.store import Claim, WorkerIdentity

    gone = WorkerIdentity(id="gone@old-host:99:dead", host="old-host", pid=99)
    cid = aq.create_conversation().id
    crashed = aq.store.submit_action(cid, "terminal", {"command": "leak"}).action_id
    queued = aq.store.submit_action(cid, "terminal", {"command": "echo next"}).action_id
    assert isinstance(aq.store.claim_action(cid, crashed, gone), Claim)
    assert aq.get_conversation(cid).status == ConversationStatus.RUNNING

    start_worker()
    wait_status(aq, cid, ConversationStatus.ERROR, timeout=20)
    assert only_error(aq, cid, crashed).detail.cause == ErrorCause.LEASE_EXPIRED
    assert only_error(aq, cid, queued).detail.cause == ErrorCause.NOT_RUN
    assert_log_consistent(aq, cid)


FAULT_MODULES = "tests.tools_for_tests,tests.faults_for_tests"


@pytest.mark.parametrize(
    "kills", [2, 5], ids=["runs_once_on_the_third_delivery", "errors_after_three_lost"]
)
def test_child_killed_before_the_claim(
    kills: int, aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """The pool child dies after receiving the task but before claiming the
    action (so the tool never started): the worker's main process sends it
    again, at most three times (``MAX_LOST_BEFORE_CLAIM``); then it errors."""
    kill_file = tmp_path / "kills-left"
    kill_file.write_text(str(kills))
    start_worker(ACTIONQ_TOOL_MODULES=FAULT_MODULES, TEST_KILL_BEFORE_CLAIM=str(kill_file))
    marker = tmp_path / "ran.txt"
    cid = aq.create_conversation().id
    action = aq.submit_action(cid, "terminal", {"command": f"echo ran >> {marker}"})
    ended = aq.wait_for_action(action.id, 30)

    raw = aq.store.redis.hget(aq.store.keys.action(cid, action.id), "lost_deliveries")
    if kills < 3:
        [event] = terminal_events(aq, cid, action.id)
        assert event.kind == "ObservationEvent", event
        assert count_lines(marker) == 1
        assert ended.attempt == 1  # only the delivery that lived reached the claim
        assert int(raw or 0) == kills
        assert aq.get_conversation(cid).status == ConversationStatus.IDLE
    else:
        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.WORKER_LOST and error.detail.signal == 9
        assert count_lines(marker) == 0  # the tool never started
        assert int(raw or 0) == 3
        assert kill_file.read_text() == str(kills - 3)  # no fourth delivery
        assert aq.get_conversation(cid).status == ConversationStatus.ERROR
    assert_log_consistent(aq, cid)


def test_crash_behind_a_long_queue_spares_other_conversations(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory, workdir: Path
) -> None:
    """Recording a crash with 10,000 calls queued behind it, while the agent
    keeps posting calls, must not stall the worker's main process: its lease
    holds, so another conversation's action on the same worker keeps its
    observation (no sweeper errors it), and the crash keeps its own cause and
    signal (no sweeper records it first)."""
    worker = start_worker("busy", concurrency=2)
    go, started = workdir / "go", workdir / "started.log"
    crashing = aq.create_conversation().id
    killer = aq.submit_action(
        crashing,
        "terminal",
        {"command": f"echo ran >> {started}; while [ ! -e {go} ]; do sleep 0.05; done; "
         "kill -9 $PPID; sleep 5"},
    )  # fmt: skip
    other = aq.create_conversation().id
    other_marker = workdir / "other.log"
    healthy = aq.submit_action(
        other, "sleep_after_mark", {"marker_file": str(other_marker), "seconds": 8}
    )
    wait_for(lambda: count_lines(started) == 1 and count_lines(other_marker) == 1, 20,
             what="both actions to run on the busy worker")  # fmt: skip
    assert aq.get_action(killer.id).owner == aq.get_action(healthy.id).owner
    queued = 10_000
    for n in range(queued):
        aq.submit_action(crashing, "terminal", {"command": f"echo {n}"})
    # A second worker sweeps: it errors the busy worker's claims if that
    # worker's lease lapses while it records the crash.
    start_worker("sweeper")

    stop_posting = threading.Event()

    def agent_keeps_posting() -> None:  # ~20 calls/s, as a busy agent does
        with ActionQ(settings) as poster:
            while not stop_posting.wait(0.05):
                poster.submit_action(crashing, "terminal", {"command": "echo late"})

    poster = threading.Thread(target=agent_keeps_posting)
    poster.start()
    try:
        go.touch()
        wait_status(aq, crashing, ConversationStatus.ERROR, timeout=30)
    finally:
        stop_posting.set()
        poster.join(10)

    error = only_error(aq, crashing, killer.id)
    assert error.detail.cause == ErrorCause.WORKER_LOST
    assert error.detail.signal == signal.SIGKILL
    # Every call queued when it crashed is not run; later ones wait for resume.
    states = Counter(
        aq.get_action(action_id).state
        for action_id in aq.store.list_action_ids(crashing)
        if action_id != killer.id
    )
    assert states[ActionState.ERRORED] >= queued
    assert set(states) <= {ActionState.ERRORED, ActionState.PENDING}
    assert aq.get_conversation(crashing).queued_actions == states[ActionState.PENDING]

    ended = aq.wait_for_action(healthy.id, timeout=30)
    assert [e.kind for e in terminal_events(aq, other, healthy.id)] == ["ObservationEvent"]
    assert ended.state == ActionState.DONE
    assert count_lines(other_marker) == 1
    assert aq.get_conversation(other).status == ConversationStatus.IDLE
    assert worker.is_alive()
    assert_log_consistent(aq, other)
    assert_log_consistent(aq, crashing)


def test_a_turn_whose_message_the_broker_lost_is_sent_again(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path, redis_url: str
) -> None:
    """Direct enqueue pushed the message, and it was lost afterwards (found
    by the chaos soak: a delivery whose claim met a dead Redis could not
    publish its retry either, and Celery rejected it for good). The sweep
    sends the turn again, and it runs once."""
    assert aq.store.broker is not None  # direct enqueue
    marker = workdir / "ran.log"
    cid = aq.create_conversation().id
    action = aq.submit_action(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0})
    broker = sync_client(redis_url)
    assert broker.delete(aq.settings.queue) == 1  # the pushed message, gone
    broker.close()
    # Not start-up recovery (it would send it at once): the periodic sweep.
    start_worker(ACTIONQ_TURN_RESEND_SECONDS="1", ACTIONQ_RECOVER_ON_START="false")
    wait_status(aq, cid, ConversationStatus.IDLE, timeout=30)
    assert [e.kind for e in terminal_events(aq, cid, action.id)] == ["ObservationEvent"]
    assert count_lines(marker) == 1
    assert aq.store.resends(cid, action.id) >= 1
    assert_log_consistent(aq, cid)
