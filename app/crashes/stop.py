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

from actionq.crashes.causes import CAUSES, agent_error_event
from actionq.crashes.output_tail import crash_output_tail, discard_output_tail
from actionq.errors import ActionNotFound, StoreUnavailableError
from actionq.models import (
    ActionRecord,
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    Event,
    UserRejectObservation,
)
from actionq.store import ActionStore, StopOutcome
from actionq.tools.sandbox import MemoryUsage, ProcessGroup

__all__ = ["cancel_action", "crash_action", "kill_leftover_processes", "leftover_memory"]

log = logging.getLogger(__name__)


def _not_run_template() -> AgentErrorEvent:
    """The event each action queued behind a crash gets; the store's script
    fills in its id, tool name, tool call id and action id."""
    placeholder = ActionRecord(
        id="", conversation_id="", state=ActionState.PENDING, tool="", arguments={},
        tool_call_id="", fingerprint="", created_at="",
    )  # fmt: skip
    return agent_error_event(placeholder, ErrorCause.NOT_RUN)


def _recorded_group(action: ActionRecord) -> ProcessGroup | None:
    """The action's command as recorded, if it ran on this host (a process
    elsewhere cannot be reached from here)."""
    recorded = action.pgid is not None or action.cgroup or action.memory_cgroup
    if not recorded or action.host != socket.gethostname():
        return None
    return ProcessGroup(
        pgid=action.pgid,
        start_ticks=action.pgid_start,
        boot_id=action.boot_id,
        cgroup=action.cgroup,
        memory_cgroup=action.memory_cgroup,
    )


def kill_leftover_processes(action: ActionRecord) -> None:
    """Kill what is left of the action's command (a shell's children outlive the
    process that ran the tool): its cgroup, or its process group if the pid
    still names the recorded leader (or its members). Only on the host that
    ran it; never a process that merely reuses the pid after hours or a reboot."""
    group = _recorded_group(action)
    if group is not None:
        log.info("leftovers of action %s: %s", action.id, group.kill())


def leftover_memory(action: ActionRecord) -> MemoryUsage | None:
    """What the memory cgroup of the action's command counted, if it is still
    there to read (this host, not yet killed and removed): read before
    ``kill_leftover_processes``, so that a crash event can say how much
    memory the command held. None when nothing counted it."""
    group = _recorded_group(action)
    memory = group.memory() if group is not None else None
    return memory.usage() if memory is not None else None


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
) -> ActionRecord | None:
    """Build the event for the action as read and stop the conversation; read
    again only if the action moved on meanwhile. Returns the action as this
    call ended it, or None if it did not (already ended, fenced out; with
    ``only_pending``, found started)."""
    for _ in range(_STOP_TRIES):
        if only_pending and action.state != ActionState.PENDING:
            return None
        outcome = store.stop_conversation(action, build_event(action), new_status, **options)
        if outcome != StopOutcome.MOVED:
            return action if outcome == StopOutcome.OK else None
        try:
            action = store.get_action(action.id, action.conversation_id)
        except ActionNotFound:
            return None
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
    killed_by: str | None = None,
    max_rss_bytes: int | None = None,
    memory_limit_bytes: int | None = None,
    output_tail: str | None = None,
) -> bool:
    """The action (as read by the caller) crashed, or may have: AgentErrorEvent,
    conversation ``error``, actions queued behind it not run. Returns False if
    it had already ended (or, with ``expected_fence``, was claimed anew).

    ``killed_by``, ``max_rss_bytes`` and ``memory_limit_bytes`` are what the
    caller knows; where it gives no peak, the command's memory cgroup is read
    (if it is still on this host) before what is left of it is killed. Where
    it gives no ``output_tail``, the command's spool (this host) or its copy
    in Redis gives it."""

    now = store.server_time()
    rule = CAUSES[cause]
    if max_rss_bytes is None:
        counted = leftover_memory(action)
        if counted is not None:
            max_rss_bytes = counted.peak_bytes
            memory_limit_bytes = memory_limit_bytes or counted.limit_bytes

    if output_tail is None:
        output_tail = crash_output_tail(store, action)

    def event_for(record: ActionRecord) -> Event:
        runtime = round(now - record.claimed_at, 3) if record.claimed_at else None
        return agent_error_event(
            record,
            cause,
            how=how,
            signal=signal,
            exitcode=exitcode,
            host=record.host,
            pid=record.pid,
            attempt=record.attempt,
            runtime_s=runtime,
            max_rss_bytes=max_rss_bytes,
            memory_limit_bytes=memory_limit_bytes,
            killed_by=killed_by,
            output_tail=output_tail,
        )

    if not rule.crash or rule.conversation_status is None:
        raise ValueError(f"{cause.value} is not a crash cause")
    ended = _stop(
        store,
        action,
        event_for,
        rule.conversation_status,
        new_state=rule.action_state,
        expected_fence=expected_fence,
        count_crash=True,
        not_run_template=_not_run_template(),
    )
    if ended is not None:
        kill_leftover_processes(ended)
        discard_output_tail(store, ended)
        log.error(
            "action %s of conversation %s crashed (%s%s); conversation -> error, not re-run",
            action.id,
            action.conversation_id,
            cause.value,
            f": {how}" if how else "",
        )
    return ended is not None


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
            how=reason,
            host=action.host,
            pid=action.pid,
            attempt=action.attempt,
        )

    try:
        action = store.get_action(action_id, conversation_id)
    except ActionNotFound:
        return False
    cancelled = CAUSES[ErrorCause.CANCELLED]
    assert cancelled.conversation_status is not None
    ended = _stop(
        store,
        action,
        event_for,
        cancelled.conversation_status,
        only_pending=only_if_pending,
        new_state=cancelled.action_state,
    )
    if ended is not None:
        kill_leftover_processes(ended)
        discard_output_tail(store, ended)  # if the tool process went with it
        log.warning(
            "action %s of conversation %s cancelled; conversation -> paused",
            action_id,
            conversation_id,
        )
    return ended is not None
