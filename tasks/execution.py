"""One delivery of an action: claim it, run its tool, record the outcome.

Only a successful claim runs the tool. A delivery for an action that is
already claimed runs nothing: if the claim's owner is alive the action is still
running (the broker redelivered it after the visibility timeout) and is left
alone; if the owner is dead the action is errored as ``redelivered``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from app.errors import UnknownToolError
from app.lifecycle import agent_error_event, crash_action
from app.models import ActionRecord, ActionState, ErrorCause, Event, ObservationEvent
from app.settings import Settings
from app.store import ActionStore, Claim, ClaimRefused, WorkerIdentity
from app.tools import ToolContext, get_tool

__all__ = ["execute_action"]

log = logging.getLogger(__name__)

Dispatcher = Callable[[str, str], None]


def _claim_record(claim: Claim) -> ActionRecord:
    """The fields an event needs, from the claim (no second read)."""
    return ActionRecord(
        id=claim.action_id,
        conversation_id=claim.conversation_id,
        state=ActionState.CLAIMED,
        tool=claim.tool,
        arguments=claim.arguments,
        tool_call_id=claim.tool_call_id,
        fingerprint="",
        created_at="",
        attempt=claim.attempt,
    )


def _handle_refused(
    store: ActionStore, conversation_id: str, action_id: str, refused: ClaimRefused
) -> str:
    if refused.state == ActionState.CLAIMED:
        if refused.owner and store.is_worker_alive(refused.owner):
            log.info(
                "action %s redelivered (attempt %d) while running on live worker %s: left alone",
                action_id,
                refused.attempt,
                refused.owner,
            )
            return "skipped: running elsewhere"
        crash_action(
            store,
            conversation_id,
            action_id,
            ErrorCause.REDELIVERED,
            how=f"redelivered (attempt {refused.attempt}); owner {refused.owner} is gone",
            expected_fence=refused.fence,
        )
        return "errored: redelivered"
    log.info(
        "action %s delivery (attempt %d) runs nothing: %s%s",
        action_id,
        refused.attempt,
        refused.reason,
        f" ({refused.state.value})" if refused.state else "",
    )
    return f"skipped: {refused.reason}"


def _run_tool(claim: Claim, settings: Settings, store: ActionStore) -> tuple[Event, bool]:
    """Run the tool. Returns the terminal event and whether it is an observation."""
    record = _claim_record(claim)
    try:
        tool = get_tool(claim.tool)
    except UnknownToolError as e:
        return agent_error_event(
            record, ErrorCause.UNKNOWN_TOOL, str(e), attempt=claim.attempt
        ), False
    try:
        args = tool.args_model.model_validate(claim.arguments)
    except ValidationError as e:
        message = f"invalid arguments for tool {claim.tool!r}: {e}"
        return agent_error_event(
            record, ErrorCause.INVALID_ARGUMENTS, message, attempt=claim.attempt
        ), False
    context = ToolContext(
        conversation_id=claim.conversation_id,
        action_id=claim.action_id,
        workdir=Path(settings.workdir),
        max_output_bytes=settings.max_output_bytes,
        memory_limit_mb=settings.action_memory_limit_mb,
        register_process_group=lambda pgid: store.record_process_group(
            claim.conversation_id, claim.action_id, pgid
        ),
    )
    try:
        observation = tool.run(args, context)
    except Exception as e:  # the tool failed; the agent sees why and may go on
        log.warning("tool %s of action %s raised %r", claim.tool, claim.action_id, e)
        message = f"tool {claim.tool!r} raised {type(e).__name__}: {e}"
        return agent_error_event(
            record, ErrorCause.TOOL_EXCEPTION, message, attempt=claim.attempt
        ), False
    event = ObservationEvent(
        action_id=claim.action_id,
        tool_call_id=claim.tool_call_id,
        tool_name=claim.tool,
        observation=observation,
    )
    return event, True


def execute_action(
    store: ActionStore,
    settings: Settings,
    worker: WorkerIdentity,
    conversation_id: str,
    action_id: str,
    dispatch: Dispatcher,
) -> str:
    """Claim, run, finish. Returns a short outcome (shown in Flower)."""
    started = time.monotonic()
    claim = store.claim_action(conversation_id, action_id, worker)
    if isinstance(claim, ClaimRefused):
        return _handle_refused(store, conversation_id, action_id, claim)
    log.info(
        "action %s (%s) of conversation %s claimed, attempt %d, fence %d",
        action_id,
        claim.tool,
        conversation_id,
        claim.attempt,
        claim.fence,
    )
    event, observed = _run_tool(claim, settings, store)
    finished = store.finish_action(claim, event, worker)
    elapsed = time.monotonic() - started
    if not finished.appended:
        return "dropped: late result"
    log.info(
        "%6.2fs action %s of conversation %s -> %s",
        elapsed,
        action_id,
        conversation_id,
        event.kind,
    )
    if finished.next_action_id:
        dispatch(conversation_id, finished.next_action_id)
    return "done" if observed else "done: tool error"
