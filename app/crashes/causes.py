"""Every way an action can end with an ``AgentErrorEvent``, in one table.

For each ``ErrorCause``: whether it is a crash (the tool may have run, partly
or fully, and its conversation stops in ``error``), whether the same call may
be tried again, the state the action ends in, the status its conversation
goes to, who writes it, and the message the agent reads. A new cause is one
new row; ``agent_error_event`` builds every such event from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from actionq.models import (
    ActionRecord,
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    ErrorClassification,
    ErrorDetail,
)

__all__ = ["CAUSES", "OUTPUT_TAIL_HEADING", "Cause", "agent_error_event", "with_output_tail"]


@dataclass(frozen=True)
class Cause:
    crash: bool  # the tool may have had side effects; never re-run by itself
    retryable: bool  # ErrorClassification.retryable: may the agent try the same call
    action_state: ActionState
    # Where the conversation goes; None: it goes on (the next action runs).
    conversation_status: ConversationStatus | None
    written_by: str
    # The agent-facing text; ``{how}`` is filled in by the writer. None: the
    # writer's own text (the tool's exception, the validation error).
    message: str | None = None


def _crash(written_by: str, message: str) -> Cause:
    return Cause(True, False, ActionState.ERRORED, ConversationStatus.ERROR, written_by, message)


CAUSES: dict[ErrorCause, Cause] = {
    ErrorCause.WORKER_LOST: _crash(
        "task_failure with WorkerLostError (the worker's main process)",
        "the process running this action died ({how}); it was not re-run",
    ),
    ErrorCause.TIME_LIMIT: _crash(
        "task_failure with TimeLimitExceeded",
        "the action exceeded its hard time limit and was killed; it was not re-run",
    ),
    ErrorCause.REDELIVERED: _crash(
        "a redelivered message that finds a claim whose owner's lease expired",
        "the worker running this action disappeared and its message came back; "
        "the action was not re-run",
    ),
    ErrorCause.LEASE_EXPIRED: _crash(
        "the lease sweep, or start-up recovery",
        "the worker running this action stopped heartbeating (it died or was cut off); "
        "the action was not re-run",
    ),
    ErrorCause.WORKER_SHUTDOWN: _crash(
        "the worker's shutdown handler, for the claims it still holds",
        "the worker was shut down while this action ran; it was not re-run",
    ),
    ErrorCause.ABANDONED: _crash(
        "the worker's claim audit: a claim none of its running tasks holds",
        "the worker stopped running this action without recording its outcome "
        "(for example, the state store was unreachable); it was not re-run",
    ),
    ErrorCause.MEMORY_LIMIT: _crash(
        "the pool child that ran the tool (it lives on: only the command's processes "
        "died), when the kernel killed the command for memory",
        "the command was killed for using too much memory ({how}); it may have had "
        "side effects and was not re-run",
    ),
    ErrorCause.TOOL_EXCEPTION: Cause(
        False, True, ActionState.DONE, None, "the run itself: the tool raised"
    ),
    ErrorCause.INVALID_ARGUMENTS: Cause(
        False, False, ActionState.DONE, None, "the run, before the tool: its model refused them"
    ),
    ErrorCause.UNKNOWN_TOOL: Cause(
        False, False, ActionState.DONE, None, "the run, before the tool: no such tool"
    ),
    ErrorCause.CANCELLED: Cause(
        False,
        False,
        ActionState.CANCELLED,
        ConversationStatus.PAUSED,
        "pause (task_revoked in the worker) while it ran",
        "cancelled while running: {how}",
    ),
    ErrorCause.NOT_RUN: Cause(
        False,
        True,
        ActionState.ERRORED,
        ConversationStatus.ERROR,
        "the crash of an action it was queued behind (in the same step)",
        "not run: an earlier action of this conversation crashed and the conversation "
        "stopped; submit it again after resuming if it is still wanted",
    ),
}


OUTPUT_TAIL_HEADING = "Last output before the crash:"
OUTPUT_TAIL_FENCE = "-----"


def with_output_tail(tail: str) -> str:
    """What follows the error text when the command wrote something: the
    model (and a person) reads what it was doing when it died."""
    body = tail if tail.endswith("\n") else tail + "\n"
    return f"\n\n{OUTPUT_TAIL_HEADING}\n{OUTPUT_TAIL_FENCE}\n{body}{OUTPUT_TAIL_FENCE}"


def agent_error_event(
    action: ActionRecord, cause: ErrorCause, error: str | None = None, **detail: object
) -> AgentErrorEvent:
    """The ``AgentErrorEvent`` for ``action`` ending with ``cause``: the
    table's message (``how`` in ``detail`` fills its ``{how}``) unless
    ``error`` gives the text, its classification, and ``detail``."""
    rule = CAUSES[cause]
    how = str(detail.pop("how", "") or "killed")
    if error is None:
        if rule.message is None:
            raise ValueError(f"cause {cause.value} needs the writer's own error text")
        error = rule.message.format(how=how)
    tail = detail.get("output_tail")
    if isinstance(tail, str) and tail:
        error += with_output_tail(tail)
    return AgentErrorEvent(
        error=error,
        tool_name=action.tool,
        tool_call_id=action.tool_call_id,
        action_id=action.id,
        classification=ErrorClassification(
            kind="crash" if rule.crash else cause.value, retryable=rule.retryable
        ),
        detail=ErrorDetail.model_validate({"cause": cause, **detail}),
    )
