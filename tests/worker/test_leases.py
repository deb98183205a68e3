"""Lost workers, shutdown, resume, retry and ordering, with real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actionq.errors import ConflictError, InvalidTransition, QuarantinedAction
from actionq.models import ActionState, ConversationStatus, ErrorCause, ObservationEvent
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, only_error, terminal_events
from tests.helpers import ROOT, wait_for


@pytest.fixture
def sweeper(settings_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A standalone ``actionq sweeper`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env |= settings_env | {"PYTHONPATH": str(ROOT)}
    with (tmp_path / "sweeper.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "actionq", "sweeper"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield process
    process.terminate()
    process.wait(10)


def wait_status(aq: ActionQ, cid: str, status: ConversationStatus, timeout: float = 30) -> None:
    wait_for(lambda: aq.get_conversation(cid).status == status, timeout, what=f"status {status}")


def test_sweeper_reports_a_killed_worker_within_the_lease(
    aq: ActionQ,
    start_worker: WorkerFactory,
    sweeper: subprocess.Popen[bytes],
    workdir: Path,
) -> None:
    worker = start_worker("doomed")
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    action = aq.submit_action(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60})
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")
    worker.kill_everything()  # parent and children, as when a node dies

    # Lease 3 s + sweep every 1 s; the bound is generous for a loaded machine.
    wait_status(aq, cid, ConversationStatus.ERROR, timeout=15)
    assert only_error(aq, cid, action.id).detail.cause == ErrorCause.LEASE_EXPIRED

    # The broker hands the message out again (visibility timeout 5 s); the new
    # worker runs nothing and adds no second terminal event.
    start_worker("successor")
    wait_for(lambda: aq.get_action(action.id).attempt >= 2, 30, what="the redelivery")
    assert count_lines(marker) == 1
    assert len(terminal_events(aq, cid, action.id)) == 1
    assert aq.get_conversation(cid).status == ConversationStatus.ERROR
    assert_log_consistent(aq, cid)


def test_resume_after_error_runs_the_next_action(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    crashed = aq.submit_action(cid, "kill_own_process", {"marker_file": str(marker)})
    wait_status(aq, cid, ConversationStatus.ERROR)
    held = aq.submit_action(cid, "terminal", {"command": "echo after"})
    assert aq.get_action(held.id).state == ActionState.PENDING  # nothing runs in `error`

    aq.resume(cid)
    assert aq.wait_for_action(held.id, 20).terminal_kind == "ObservationEvent"
    assert aq.get_action(crashed.id).state == ActionState.ERRORED  # not re-run
    assert count_lines(marker) == 1
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE
    assert_log_consistent(aq, cid)


def test_concurrent_resumes_exactly_one_succeeds(aq: ActionQ) -> None:
    cid = aq.create_conversation().id
    aid = aq.store.submit_action(cid, "terminal", {"command": "x"}).action_id
    from actionq.crashes.stop import crash_action

    crash_action(aq.store, aq.store.get_action(aid, cid), ErrorCause.WORKER_LOST)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def resume() -> None:
        barrier.wait()
        try:
            aq.store.resume_conversation(cid)
            outcomes.append("ok")
        except InvalidTransition:
            outcomes.append("refused")

    threads = [threading.Thread(target=resume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7


def test_retry_makes_a_new_action_and_quarantines_a_repeat_crasher(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    first = aq.submit_action(cid, "kill_own_process", {"marker_file": str(marker)})
    wait_status(aq, cid, ConversationStatus.ERROR)

    second = aq.retry_action(first.id)
    assert second.id != first.id and second.retry_of == first.id
    assert second.arguments == first.arguments
    aq.wait_for_action(second.id, 30)
    wait_status(aq, cid, ConversationStatus.ERROR)
    assert count_lines(marker) == 2  # the retry is a new, explicit run

    with pytest.raises(QuarantinedAction, match="crashed 2 time"):
        aq.retry_action(second.id)
    assert count_lines(marker) == 2
    assert len(aq.store.list_action_ids(cid)) == 2  # nothing was submitted

    third = aq.retry_action(second.id, force=True)
    aq.wait_for_action(third.id, 30)
    assert count_lines(marker) == 3
    assert only_error(aq, cid, third.id).detail.cause == ErrorCause.WORKER_LOST
    assert_log_consistent(aq, cid)


def test_concurrent_retries_make_one_action_and_refusals_store_nothing(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """80 clients retry one crashed call at once: one retry is stored and runs;
    every other request is refused and stores nothing (no 409 for an action
    that was stored and ran anyway)."""
    start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    crashed = aq.submit_action(cid, "kill_own_process", {"marker_file": str(marker)})
    wait_status(aq, cid, ConversationStatus.ERROR)

    clients = 80
    barrier = threading.Barrier(clients)
    retried: list[str] = []
    refused: list[str] = []

    def retry() -> None:
        barrier.wait(10)
        try:
            retried.append(aq.retry_action(crashed.id).id)
        except ConflictError as e:
            refused.append(e.code)

    threads = [threading.Thread(target=retry) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert len(retried) == 1, retried
    assert len(refused) == clients - 1
    assert set(refused) <= {"retry_in_progress", "quarantined"}, set(refused)
    assert aq.store.list_action_ids(cid) == [crashed.id, retried[0]]
    aq.wait_for_action(retried[0], 30)
    assert count_lines(marker) == 2  # the original and the one retry
    assert_log_consistent(aq, cid)


def test_retry_storm_is_bounded_by_outcomes(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """Clients retrying in a loop: while a retry is unfinished the next is
    refused, and once the call crashed past the threshold it is quarantined,
    so the storm makes one retry, not hundreds."""
    start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    crashed = aq.submit_action(cid, "kill_own_process", {"marker_file": str(marker)})
    wait_status(aq, cid, ConversationStatus.ERROR)

    retried: list[str] = []
    deadline = time.monotonic() + 1.5

    def storm() -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(ConflictError):
                retried.append(aq.retry_action(crashed.id).id)

    threads = [threading.Thread(target=storm) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert len(retried) == 1
    aq.wait_for_action(retried[0], 30)
    with pytest.raises(QuarantinedAction):
        aq.retry_action(crashed.id)
    assert len(aq.store.list_action_ids(cid)) == 2
    assert count_lines(marker) == 2


def test_one_conversation_runs_in_order_across_workers(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    for name in ("a", "b", "c"):
        start_worker(name)
    cid = aq.create_conversation().id
    marker = workdir / "order.log"
    actions = [
        aq.submit_action(
            cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0.1, "line": str(i)}
        )
        for i in range(10)
    ]
    for action in actions:
        aq.wait_for_action(action.id, 60)

    assert marker.read_text().split() == [str(i) for i in range(10)]
    observed = [
        e.observation["line"] for e in aq.store.all_events(cid) if isinstance(e, ObservationEvent)
    ]
    assert observed == [str(i) for i in range(10)]
    assert_log_consistent(aq, cid)


def test_conversations_run_in_parallel_on_all_workers(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    for name in ("a", "b", "c"):
        start_worker(name)
    actions = []
    for i in range(10):
        cid = aq.create_conversation().id
        actions.append(
            aq.submit_action(
                cid,
                "sleep_after_mark",
                {"marker_file": str(workdir / f"{i}.log"), "seconds": 1.0},
            )
        )
    records = [aq.wait_for_action(a.id, 60) for a in actions]
    # Owner ids look like "a@host:pid:nonce": every worker took a share.
    assert {str(r.owner).split("@")[0] for r in records} == {"a", "b", "c"}


def test_warm_shutdown_lets_a_short_action_finish(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    action = aq.submit_action(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 3})
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")

    os.kill(worker.pid, signal.SIGTERM)  # warm shutdown, to the main process only
    assert worker.process is not None
    assert worker.process.wait(30) == 0

    [event] = terminal_events(aq, cid, action.id)
    assert isinstance(event, ObservationEvent)
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE


def test_warm_shutdown_keeps_the_lease_while_the_pool_drains(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """With another worker sweeping, an action longer than the lease still
    finishes during a warm shutdown: the draining worker keeps its lease
    until its pool is empty, so nobody errors the action it is finishing."""
    draining = start_worker("draining")
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    action = aq.submit_action(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 8})
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")
    start_worker("sweeping")  # sweeps every second; lease 3 s

    os.kill(draining.pid, signal.SIGTERM)  # warm shutdown
    assert draining.process is not None
    assert draining.process.wait(30) == 0

    [event] = terminal_events(aq, cid, action.id)
    assert isinstance(event, ObservationEvent), event
    assert count_lines(marker) == 1
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE


def test_cold_shutdown_errors_the_cut_off_action(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    action = aq.submit_action(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60})
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")

    os.kill(worker.pid, signal.SIGQUIT)  # cold shutdown
    assert worker.process is not None
    worker.process.wait(30)

    error = only_error(aq, cid, action.id)
    assert error.detail.cause == ErrorCause.WORKER_SHUTDOWN
    assert aq.get_conversation(cid).status == ConversationStatus.ERROR
    assert count_lines(marker) == 1


def test_worker_starts_while_a_conversation_is_being_created(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """create_conversation lists a conversation a moment before its hash
    exists; a worker starting in that moment must start and serve."""
    being_created = "conversation-being-created"
    aq.store.redis.zadd(aq.store.keys.conversation_index(), {being_created: 1.0})
    assert not aq.store.redis.exists(aq.store.keys.conversation(being_created))

    start_worker("late")  # start-up recovery runs over the half-created entry
    cid = aq.create_conversation().id
    marker = workdir / "ran.log"
    action = aq.submit_action(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0})
    assert aq.wait_for_action(action.id, timeout=20).state == ActionState.DONE
    assert count_lines(marker) == 1
