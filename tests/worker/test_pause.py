"""Interrupt (the user presses Stop) with a real worker: revoke(terminate)
kills the pool child, the task_revoked handler records the cancellation.
Pause (between steps) lets the running action finish and holds the rest."""

from __future__ import annotations

from pathlib import Path

import psutil

from actionq.models import ActionState, ConversationStatus, ErrorCause, UserRejectObservation
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, only_error, terminal_events
from tests.helpers import wait_for


def test_interrupt_terminates_the_running_action_and_holds_the_queue(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "side-effect.log"
    running = aq.submit_action(
        cid, "terminal", {"command": f"echo started >> {marker}; sleep 60; echo done >> {marker}"}
    )
    queued = aq.submit_action(cid, "terminal", {"command": "echo after resume"})
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")
    sleeper = wait_for(
        lambda: [
            p
            for p in psutil.process_iter(["cmdline"])
            if "sleep" in (p.info["cmdline"] or [])
            and str(marker) in " ".join(p.parent().cmdline() if p.parent() else [])
        ],
        10,
        what="the command's sleep process",
    )[0]

    assert aq.interrupt(cid).status == ConversationStatus.PAUSED
    wait_for(
        lambda: aq.get_action(running.id).state == ActionState.CANCELLED, 20, what="cancellation"
    )

    error = only_error(aq, cid, running.id)
    assert error.detail.cause == ErrorCause.CANCELLED
    assert aq.get_conversation(cid).status == ConversationStatus.PAUSED
    assert aq.get_action(queued.id).state == ActionState.PENDING  # held, not run
    # The command's own processes died with the pool child (no orphan keeps going).
    wait_for(
        lambda: not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE,
        10,
        what="the orphaned command to die",
    )
    assert count_lines(marker) == 1
    assert worker.is_alive()

    aq.resume(cid)
    assert aq.wait_for_action(queued.id, 20).terminal_kind == "ObservationEvent"
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE
    assert_log_consistent(aq, cid)


def test_interrupt_before_start_rejects_the_action(aq: ActionQ) -> None:
    """No worker at all: the dispatched action has not started, so an
    interrupt ends it with a UserRejectObservation and nothing ever runs it."""
    cid = aq.create_conversation().id
    action = aq.submit_action(cid, "terminal", {"command": "echo never"})
    aq.interrupt(cid)
    [event] = terminal_events(aq, cid, action.id)
    assert isinstance(event, UserRejectObservation)
    assert aq.get_action(action.id).state == ActionState.CANCELLED
    assert aq.get_conversation(cid).status == ConversationStatus.PAUSED


def test_pause_lets_the_running_action_finish_and_holds_the_queue(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    marker = workdir / "pause.log"
    running = aq.submit_action(
        cid, "sleep_after_mark", {"marker_file": str(marker), "line": "one", "seconds": 1}
    )
    queued = aq.submit_action(
        cid, "sleep_after_mark", {"marker_file": str(marker), "line": "two", "seconds": 0}
    )
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to start")
    assert aq.pause(cid).status == ConversationStatus.PAUSED
    assert aq.wait_for_action(running.id, 20).terminal_kind == "ObservationEvent"
    assert aq.get_action(queued.id).state == ActionState.PENDING  # held
    assert aq.get_conversation(cid).status == ConversationStatus.PAUSED
    assert aq.run(cid).status == ConversationStatus.RUNNING
    assert aq.wait_for_action(queued.id, 20).terminal_kind == "ObservationEvent"
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE
    assert count_lines(marker) == 2
    assert_log_consistent(aq, cid)
