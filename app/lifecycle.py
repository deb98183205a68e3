"""Ending actions from outside their run: crashes, lost workers, cancellation.

These build the terminal events and call the store's one atomic transition.
Every function here is idempotent: a second call for the same failure (Celery
can fire ``task_failure`` twice on a time limit) writes nothing.
"""

from __future__ import annotations

import logging
import socket

from app.models import (
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
from app.store import ActionStore
from app.tools.sandbox import ProcessGroup

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


def _not_run_event(action: ActionRecord) -> Event:
    return agent_error_event(
        action,
        ErrorCause.NOT_RUN,
        "not run: an earlier action of this conversation crashed and the conversation "
        "stopped; submit it again after resuming if it is still wanted",
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


def crash_action(
    store: ActionStore,
    conversation_id: str,
    action_id: str,
    cause: ErrorCause,
    *,
    how: str = "",
    signal: int | None = None,
    exitcode: int | None = None,
    expected_fence: int | None = None,
) -> bool:
    """The action crashed (or may have): AgentErrorEvent, conversation ``error``,
    actions queued behind it not run. Returns False if it had already ended."""

    now = store.server_time()

    def event_for(action: ActionRecord) -> Event:
        runtime = round(now - action.claimed_at, 3) if action.claimed_at else None
        message = _CRASH_MESSAGES[cause].format(how=how or "killed")
        return agent_error_event(
            action,
            cause,
            message,
            signal=signal,
            exitcode=exitcode,
            host=action.host,
            pid=action.pid,
            attempt=action.attempt,
            runtime_s=runtime,
        )

    stopped = store.stop_conversation(
        conversation_id,
        ConversationStatus.ERROR,
        target_action_id=action_id,
        target_event=event_for,
        expected_fence=expected_fence,
        drop_queue=True,
        count_crash=True,
        queued_event=_not_run_event,
    )
    if stopped:
        kill_leftover_processes(store, conversation_id, action_id)
        log.error(
            "action %s of conversation %s crashed (%s%s); conversation -> error, not re-run",
            action_id,
            conversation_id,
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

    stopped = store.stop_conversation(
        conversation_id,
        ConversationStatus.PAUSED,
        target_action_id=action_id,
        target_event=event_for,
        drop_queue=False,
        target_state=ActionState.CANCELLED,
        target_states=(ActionState.PENDING,)
        if only_if_pending
        else (ActionState.PENDING, ActionState.CLAIMED),
    )
    if stopped:
        kill_leftover_processes(store, conversation_id, action_id)
        log.warning(
            "action %s of conversation %s cancelled; conversation -> paused",
            action_id,
            conversation_id,
        )
    return stopped
