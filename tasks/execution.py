"""One delivery of an action: claim it, run its tool, record the outcome.

Only a successful claim runs the tool. A delivery for an action that is
already claimed runs nothing: if the claim's owner is alive the action is still
running (the broker redelivered it after the visibility timeout) and is left
alone; if the owner is dead the action is errored as ``redelivered``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from actionq.agent.profiles import model_key_env_names
from actionq.crashes.causes import agent_error_event
from actionq.crashes.stop import crash_action
from actionq.errors import (
    ClaimUnavailableError,
    CommandOutOfMemory,
    ConfigurationError,
    StoreUnavailableError,
    UnavailableError,
    UnknownToolError,
)
from actionq.messaging.dispatch import resend_turn
from actionq.models import (
    ActionRecord,
    ActionState,
    ConversationStatus,
    ErrorCause,
    Event,
    ObservationEvent,
    validation_error_text,
)
from actionq.settings import Settings
from actionq.store import ActionStore, Claim, ClaimRefused, WorkerIdentity
from actionq.tools import ToolContext, conversation_workspace, get_tool
from actionq.tools.sandbox import tool_environment
from actionq.tools.spool import decode_tail

__all__ = ["execute_action", "tool_env"]

log = logging.getLogger(__name__)

Dispatcher = Callable[[str, str], None]
T = TypeVar("T")

# Back-off of the retries of writes after the tool ran (a short Redis outage
# must not lose an outcome), for ``ACTIONQ_OUTCOME_RETRY_SECONDS`` in all.
# Past that, the worker's claim audit errors the action (``abandoned``) once
# Redis is back.
_RETRY_DELAYS = (0.1, 0.3, 1.0, 2.0, 5.0, 10.0, 15.0)
# How long the Redis copy of a command's output tail lives past the action's
# hard time limit: long enough for a lease sweep to find it.
_TAIL_TTL_MARGIN_SECONDS = 3600


def _with_retries(operation: Callable[[], T], what: str, give_up_after: float) -> T:
    """``operation()``, retried while the store or the broker is unreachable,
    for up to ``give_up_after`` seconds; then its ``UnavailableError`` is raised."""
    deadline = time.monotonic() + give_up_after
    delays = iter(_RETRY_DELAYS)
    while True:
        try:
            return operation()
        except UnavailableError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            delay = min(next(delays, _RETRY_DELAYS[-1]), left)
            log.warning("could not %s (%s); retrying in %.1fs", what, e, delay)
            time.sleep(delay)


def tool_env(
    settings: Settings, tool_allow: Iterable[str] = (), environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The environment of a tool's commands: the base names, ACTIONQ_TOOL_ENV_ALLOW
    and the tool's own ``env``, less every model API key variable (even one
    listed by name: those keys are for agent workers, never for tools)."""
    try:
        model_keys = model_key_env_names(settings)
    except ConfigurationError as e:
        # Which variables hold keys is unknown: pass none of the allowed ones.
        log.error("tools get only the base environment: %s", e)
        env = tool_environment(environ)
        env.pop(settings.model_api_key_env, None)
        return env
    env = tool_environment(environ, [*settings.tool_env_allow, *tool_allow])
    for name in model_keys:
        env.pop(name, None)
    return env


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
            store.get_action(action_id, conversation_id),
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
    try:
        tool = get_tool(claim.tool)
    except UnknownToolError as e:
        return agent_error_event(
            _claim_record(claim), ErrorCause.UNKNOWN_TOOL, str(e), attempt=claim.attempt
        ), False
    try:
        args = tool.args_model.model_validate(claim.arguments)
    except ValidationError as e:
        message = f"invalid arguments for tool {claim.tool!r}: {validation_error_text(e)}"
        return agent_error_event(
            _claim_record(claim), ErrorCause.INVALID_ARGUMENTS, message, attempt=claim.attempt
        ), False
    try:
        # Made on the conversation's first action; the tool is not run
        # without one (a terminal command would run wherever the worker is).
        workspace = conversation_workspace(settings, claim.conversation_id)
    except OSError as e:
        message = f"tool {claim.tool!r} was not run: {e}"
        return agent_error_event(
            _claim_record(claim), ErrorCause.TOOL_EXCEPTION, message, attempt=claim.attempt
        ), False
    # The copy outlives the action's longest run, and goes with it.
    tail_ttl = int(settings.action_time_limit) + _TAIL_TTL_MARGIN_SECONDS
    context = ToolContext(
        conversation_id=claim.conversation_id,
        action_id=claim.action_id,
        workdir=workspace,
        max_output_bytes=settings.max_output_bytes,
        memory_limit_mb=settings.action_memory_limit_mb,
        register_process_group=lambda group: store.record_process_group(
            claim.conversation_id, claim.action_id, group
        ),
        env=tool_env(settings, tool.env),
        protected_paths=(Path(settings.data_dir),) if settings.data_dir else (),
        use_cgroups=settings.tool_cgroups,
        file_timeout=settings.file_tool_timeout,
        output_spool_dir=Path(settings.output_spool_dir) if settings.output_spool_dir else None,
        output_tail_bytes=settings.output_tail_bytes,
        publish_output_tail=lambda tail: store.publish_output_tail(
            claim.conversation_id, claim.action_id, decode_tail(tail), tail_ttl
        ),
        forget_output_tail=lambda: store.forget_output_tail(claim.conversation_id, claim.action_id),
    )
    try:
        observation = tool.run(args, context)
    except CommandOutOfMemory:
        raise  # a crash, not a tool error: execute_action records it
    except Exception as e:  # the tool failed; the agent sees why and may go on
        log.warning("tool %s of action %s raised %r", claim.tool, claim.action_id, e)
        message = f"tool {claim.tool!r} raised {type(e).__name__}: {e}"
        return agent_error_event(
            _claim_record(claim), ErrorCause.TOOL_EXCEPTION, message, attempt=claim.attempt
        ), False
    event = ObservationEvent(
        action_id=claim.action_id,
        tool_call_id=claim.tool_call_id,
        tool_name=claim.tool,
        observation=observation,
    )
    return event, True


def _record_memory_crash(
    store: ActionStore,
    settings: Settings,
    worker: WorkerIdentity,
    claim: Claim,
    killed: CommandOutOfMemory,
) -> str:
    """The kernel killed the action's command for memory. What the command did
    before may stand, so it is a crash like any other (conversation ``error``,
    queued actions not run); but only the command's processes died, so this
    pool child records it itself and goes on to its next action."""
    log.warning("action %s: command killed for memory: %s", claim.action_id, killed)

    def record() -> bool:
        action = store.get_action(claim.action_id, claim.conversation_id)
        return crash_action(
            store,
            action,
            ErrorCause.MEMORY_LIMIT,
            how=killed.describe(),
            signal=killed.signal,
            exitcode=killed.exitcode,
            expected_fence=claim.fence,
            killed_by=killed.killed_by,
            max_rss_bytes=killed.peak_bytes,
            memory_limit_bytes=killed.limit_bytes,
            output_tail=decode_tail(killed.output_tail) if killed.output_tail else None,
        )

    crashed = _with_retries(record, "record the crash", settings.outcome_retry_seconds)
    # The claim is settled (the audit would drop the entry too, a little later).
    with contextlib.suppress(UnavailableError):
        store.forget_worker_claim(worker.id, claim.conversation_id, claim.action_id)
    return "errored: memory_limit" if crashed else "dropped: late result"


def execute_action(
    store: ActionStore,
    settings: Settings,
    worker: WorkerIdentity,
    conversation_id: str,
    action_id: str,
    dispatch: Dispatcher,
    send_step: Dispatcher | None = None,
) -> str:
    """Claim, run, finish. Returns a short outcome (shown in Flower).
    ``send_step(conversation_id, task_id)`` sends an agent step the finish
    queued (only without direct enqueue)."""
    started = time.monotonic()
    try:
        claim = store.claim_action(conversation_id, action_id, worker)
    except StoreUnavailableError as e:
        raise ClaimUnavailableError(str(e)) from e
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
    try:
        event, observed = _run_tool(claim, settings, store)
    except CommandOutOfMemory as killed:
        return _record_memory_crash(store, settings, worker, claim, killed)
    # The agent's `finish` tool ends the conversation (until something new is posted).
    quiet = (
        ConversationStatus.FINISHED
        if observed and claim.tool == "finish"
        else ConversationStatus.IDLE
    )
    finished = _with_retries(
        lambda: store.finish_action(claim, event, worker, quiet_status=quiet),
        "record outcome",
        settings.outcome_retry_seconds,
    )
    elapsed = time.monotonic() - started
    if not finished.appended:
        # Fenced out, or an earlier try of this very write went through and
        # only its reply was lost: then the next turn may not have been sent.
        resend_turn(store, conversation_id, dispatch, skip=action_id)
        return "dropped: late result"
    log.info(
        "%6.2fs action %s of conversation %s -> %s",
        elapsed,
        action_id,
        conversation_id,
        event.kind,
    )
    if finished.next_action_id and not finished.pushed:
        next_id = finished.next_action_id
        _with_retries(
            lambda: dispatch(conversation_id, next_id),
            "send the next action",
            settings.outcome_retry_seconds,
        )
    if finished.step_task_id and not finished.step_pushed and send_step is not None:
        step_task = finished.step_task_id
        _with_retries(
            lambda: send_step(conversation_id, step_task),
            "send the agent's next step",
            settings.outcome_retry_seconds,
        )
    return "done" if observed else "done: tool error"
