"""Ending actions from outside their run: crashes, lost workers, cancellation.

These build the terminal events and call the store's one atomic transition.
Every function here is idempotent: a second call for the same failure (Celery
can fire ``task_failure`` twice on a time limit) writes nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from actionq.errors import ActionNotFound, StoreUnavailableError
from actionq.models import (
    ActionRecord,
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    ErrorClassification,
    ErrorDetail,
    Event,
    UserRejectObservation,
)
from actionq.store import ActionStore, StopOutcome
from actionq.tools.sandbox import ProcessGroup

__all__ = ["agent_error_event", "cancel_action", "crash_action"]

log = logging.getLogger(__name__)

_CRASH_MESSAGES = {
    ErrorCause.WORKER_LOST: "the process running this action died ({how}); it was not re-run",
    ErrorCause.TIME_LIMIT: "the action exceeded its hard time limit and was killed; "
    "it was not re-run",
    ErrorCause.REDELIVERED: "the worker running this action disappeared and its message came "
    "back; the action was not re-run",
    ErrorCause.LEASE_EXPIRED: "the worker running this action stopped heartbeating (it died "
    "or was cut off); the action was not re-run",
    ErrorCause.WORKER_SHUTDOWN: "the worker was shut down while this action ran; it was not re-run",
    ErrorCause.ABANDONED: "the worker stopped running this action without recording its "
    "outcome (for example, the state store was unreachable); it was not re-run",
}


def agent_error_event(
    action: ActionRecord, cause: ErrorCause, error: str, **detail: object
) -> AgentErrorEvent:
    return AgentErrorEvent(
        error=error,
        tool_name=action.tool,
        tool_call_id=action.tool_call_id,
        action_id=action.id,
        classification=ErrorClassification(
            kind="crash" if cause.is_crash else cause.value,
            retryable=cause in (ErrorCause.NOT_RUN, ErrorCause.TOOL_EXCEPTION),
        ),
        detail=ErrorDetail.model_validate({"cause": cause, **detail}),
    )


def _not_run_template() -> AgentErrorEvent:
    """The event each action queued behind a crash gets; the store's script
    fills in its id, tool name, tool call id and action id."""
    return AgentErrorEvent(
        error="not run: an earlier action of this conversation crashed and the conversation "
        "stopped; submit it again after resuming if it is still wanted",
        tool_name="",
        tool_call_id="",
        action_id="",
        classification=ErrorClassification(kind=ErrorCause.NOT_RUN.value, retryable=True),
        detail=ErrorDetail(cause=ErrorCause.NOT_RUN),
    )


def kill_leftover_processes(store: ActionStore, conversation_id: str, action_id: str) -> None:
    """Kill what is left of the action's command (a shell's children outlive the
    process that ran the tool): its cgroup, or its process group if the pid
    still names the recorded leader (or its members). Only on the host that
    ran it; never a process that merely reuses the pid after hours or a reboot."""
    action = store.get_action(action_id, conversation_id)
    if (action.pgid is None and action.cgroup is None) or action.host != socket.gethostname():
        return
    group = ProcessGroup(
        pgid=action.pgid,
        start_ticks=action.pgid_start,
        boot_id=action.boot_id,
        cgroup=action.cgroup,
    )
    log.info("leftovers of action %s: %s", action_id, group.kill())


# A stop is retried when the action changed state between the read and the
# script (e.g. claimed meanwhile); each try is O(1) round trips.
_STOP_TRIES = 5


def _stop(
    store: ActionStore,
    action: ActionRecord,
    build_event: Callable[[ActionRecord], Event],
    new_status: ConversationStatus,
    *,
    only_pending: bool = False,
    **options: Any,
) -> bool:
    """Build the event for the action as read and stop the conversation; read
    again only if the action moved on meanwhile. True if this call ended it.
    With ``only_pending`` an action found started is left alone."""
    for _ in range(_STOP_TRIES):
        if only_pending and action.state != ActionState.PENDING:
            return False
        outcome = store.stop_conversation(action, build_event(action), new_status, **options)
        if outcome != StopOutcome.MOVED:
            return outcome == StopOutcome.OK
        try:
            action = store.get_action(action.id, action.conversation_id)
        except ActionNotFound:
            return False
    raise StoreUnavailableError(
        f"action {action.id} kept changing state; could not stop conversation "
        f"{action.conversation_id} after {_STOP_TRIES} tries"
    )


def crash_action(
    store: ActionStore,
    action: ActionRecord,
    cause: ErrorCause,
    *,
    how: str = "",
    signal: int | None = None,
    exitcode: int | None = None,
    expected_fence: int | None = None,
) -> bool:
    """The action (as read by the caller) crashed, or may have: AgentErrorEvent,
    conversation ``error``, actions queued behind it not run. Returns False if
    it had already ended (or, with ``expected_fence``, was claimed anew)."""

    now = store.server_time()
    message = _CRASH_MESSAGES[cause].format(how=how or "killed")

    def event_for(record: ActionRecord) -> Event:
        runtime = round(now - record.claimed_at, 3) if record.claimed_at else None
        return agent_error_event(
            record,
            cause,
            message,
            signal=signal,
            exitcode=exitcode,
            host=record.host,
            pid=record.pid,
            attempt=record.attempt,
            runtime_s=runtime,
        )

    stopped = _stop(
        store,
        action,
        event_for,
        ConversationStatus.ERROR,
        new_state=ActionState.ERRORED,
        expected_fence=expected_fence,
        count_crash=True,
        not_run_template=_not_run_template(),
    )
    if stopped:
        kill_leftover_processes(store, action.conversation_id, action.id)
        log.error(
            "action %s of conversation %s crashed (%s%s); conversation -> error, not re-run",
            action.id,
            action.conversation_id,
            cause.value,
            f": {how}" if how else "",
        )
    return stopped


def cancel_action(
    store: ActionStore,
    conversation_id: str,
    action_id: str,
    reason: str = "stopped by the user",
    *,
    only_if_pending: bool = False,
) -> bool:
    """The user stopped the action: it ends, the conversation is ``paused``,
    later actions stay queued until resume. With ``only_if_pending``, an
    action that has started meanwhile is left alone (returns False)."""

    def event_for(action: ActionRecord) -> Event:
        if action.state == ActionState.PENDING:  # never started: a plain rejection
            return UserRejectObservation(
                action_id=action.id,
                tool_call_id=action.tool_call_id,
                tool_name=action.tool,
                rejection_reason=reason,
            )
        return agent_error_event(
            action,
            ErrorCause.CANCELLED,
            f"cancelled while running: {reason}",
            host=action.host,
            pid=action.pid,
            attempt=action.attempt,
        )

    try:
        action = store.get_action(action_id, conversation_id)
    except ActionNotFound:
        return False
    stopped = _stop(
        store,
        action,
        event_for,
        ConversationStatus.PAUSED,
        only_pending=only_if_pending,
        new_state=ActionState.CANCELLED,
    )
    if stopped:
        kill_leftover_processes(store, conversation_id, action_id)
        log.warning(
            "action %s of conversation %s cancelled; conversation -> paused",
            action_id,
            conversation_id,
        )
    return stopped
