"""One delivery of an agent step: claim it, build the model's messages from
a bounded window of the history, ask the agent, record its reply once.

A step's only side effect is the model call, so a step whose worker died is
queued again and asks again (``crashes.lost_step``); the reply is recorded
only by the worker that claimed this very step, so a second delivery of a
finished step appends nothing. The tool calls it records are actions like
any other: each its own Celery task on the tool queue, never re-run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from actionq.agent.base import Agent, AgentReply, ModelError
from actionq.agent.scripted import ScriptedAgent
from actionq.agent.spec import AgentSpec, needs_confirmation, policy_adapter
from actionq.agent.view import (
    DEFAULT_SYSTEM_PROMPT,
    STUCK_CODE,
    detect_stuck,
    render_messages,
    safe_window,
)
from actionq.crashes.lost_step import StepSender, requeue_lost_step
from actionq.errors import UnavailableError, UnknownToolError
from actionq.messaging.direct_enqueue import TaskMessages
from actionq.messaging.dispatch import action_argsrepr, send_work
from actionq.models import (
    ActionEvent,
    ConversationErrorEvent,
    ConversationStatus,
    ErrorClassification,
    LLMMessage,
    MessageEvent,
    new_id,
)
from actionq.secrets import SecretBox, SecretKeyError
from actionq.settings import Settings
from actionq.store import ActionStore, WorkerIdentity
from actionq.store.agent import NewCall, StepClaim, StepRefused
from actionq.store.records import canonical_json, fingerprint
from actionq.tools import get_tool, registered_tools

__all__ = ["EMPTY_REPLY_NUDGE", "StepContext", "execute_step", "make_agent"]

log = logging.getLogger(__name__)

# OpenHands' corrective nudge after a reply with neither text nor a call.
EMPTY_REPLY_NUDGE = (
    "Your last response did not include a function call or a message. "
    "Please use a tool to proceed with the task."
)
FINISH_TOOL = "finish"


class StepContext:
    """What a step needs besides the store: how to send work, and the
    action messages under direct enqueue."""

    def __init__(
        self,
        settings: Settings,
        worker: WorkerIdentity,
        dispatch: Callable[[str, str], None],
        send_step: StepSender,
        task_messages: TaskMessages | None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.dispatch = dispatch
        self.send_step = send_step
        self.task_messages = task_messages


def make_agent(spec: AgentSpec, settings: Settings, replies: int = 0) -> Agent:
    """The conversation's agent for one step; ``replies``: how many replies
    it has recorded so far (the turn a scripted agent plays)."""
    if spec.kind == "scripted":
        return ScriptedAgent(spec.turns, replies)
    from actionq.agent.llm import LLMAgent  # litellm: the [llm] extra
    from actionq.agent.profiles import ModelProfile, resolve_profile

    if spec.model is None:
        return LLMAgent(resolve_profile(settings, spec.model_profile), settings)
    model = spec.model
    params: dict[str, Any] = {}
    if model.temperature is not None:
        params["temperature"] = model.temperature
    if model.max_output_tokens is not None:
        params["max_tokens"] = model.max_output_tokens
    profile = ModelProfile(name="conversation", model=model.model, base_url=model.base_url)
    return LLMAgent(
        profile, settings, api_key=_open_key(model.api_key_sealed, settings), params=params
    )


def _open_key(sealed: str | None, settings: Settings) -> str | None:
    """The model key given with the conversation, opened with the server's
    secret key (only agent workers have it)."""
    if sealed is None:
        return None
    try:
        box = SecretBox.from_settings(settings)
        if box is None:
            raise SecretKeyError(
                "this agent worker has no secret key (ACTIONQ_SECRET_KEY_FILE) to open the "
                "conversation's model key"
            )
        return box.open(sealed)
    except SecretKeyError as e:
        raise ModelError(
            "SecretKeyError", str(e), kind="config", retryable=False, user_action="settings"
        ) from None


def _classified_error(
    code: str,
    detail: str,
    kind: str,
    retryable: bool,
    user_action: Literal["none", "retry", "settings"],
) -> ConversationErrorEvent:
    return ConversationErrorEvent(
        code=code,
        detail=detail,
        classification=ErrorClassification(
            kind=kind,
            retryable=retryable,
            user_action=user_action,
        ),
    )


@lru_cache(maxsize=8)
def _tool_specs(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The tools' LLM specs, built once per set of registered tools (their
    JSON schemas cost milliseconds; the registry is fixed once a worker runs)."""
    return [get_tool(name).spec() for name in names]


def _tool_risk(name: str) -> str:
    try:
        return str(getattr(get_tool(name), "risk", "UNKNOWN"))
    except UnknownToolError:
        return "UNKNOWN"


def _new_calls(ctx: StepContext, cid: str, reply: AgentReply) -> list[NewCall]:
    calls = list(reply.tool_calls)
    # As OpenHands: nothing after a `finish` call runs.
    for i, call in enumerate(calls):
        if call.name == FINISH_TOOL:
            calls = calls[: i + 1]
            break
    new: list[NewCall] = []
    for i, call in enumerate(calls):
        action_id = new_id()
        arguments = call.arguments
        arguments_json = canonical_json(arguments)
        if len(arguments_json.encode()) > ctx.settings.max_arguments_bytes:
            # Stored as a call its tool refuses: the model reads why.
            arguments = {"_arguments_too_large_bytes": len(arguments_json.encode())}
            arguments_json = canonical_json(arguments)
        event = ActionEvent(
            id=action_id,
            # Ids of our own: unique in the conversation whatever the model sends
            # (a repeated id would give one call two results).
            tool_call_id=f"call_{action_id.replace('-', '')}",
            tool_name=call.name,
            action=arguments,
            thought=reply.text if i == 0 else "",
            llm_response_id=reply.response_id,
        )
        message = None
        if ctx.task_messages is not None:
            message = ctx.task_messages.build(cid, action_id, action_argsrepr(cid, action_id))
        new.append(
            NewCall(
                event, arguments_json, fingerprint(call.name, arguments, arguments_json), message
            )
        )
    return new


def _handle_refused(
    store: ActionStore, ctx: StepContext, cid: str, task_id: str, refused: StepRefused
) -> str:
    if refused.reason == "running" and refused.detail != ctx.worker.id:
        if store.is_worker_alive(refused.detail):
            return "skipped: running elsewhere"
        # Redelivered, and the worker that claimed it is gone: ask again.
        outcome = requeue_lost_step(
            store,
            cid,
            refused.detail,
            ctx.settings.agent_step_attempts,
            ctx.send_step,
            f"redelivered; worker {refused.detail} is gone",
        )
        return f"redelivered: {outcome}"
    log.info(
        "agent step %s of %s runs nothing: %s %s", task_id, cid, refused.reason, refused.detail
    )
    return f"skipped: {refused.reason}"


def execute_step(store: ActionStore, ctx: StepContext, cid: str, task_id: str) -> str:
    """Claim, ask, record. Returns a short outcome (shown in Flower)."""
    started = time.monotonic()
    claim = store.claim_step(cid, task_id, ctx.worker)
    if isinstance(claim, StepRefused):
        return _handle_refused(store, ctx, cid, task_id, claim)
    try:
        return _run_claimed_step(store, ctx, claim, started)
    except UnavailableError:
        raise  # the store is away: the step stays claimed; the claim audit requeues it
    except Exception as e:  # a bug must end the run visibly, not leave it running
        log.exception("agent step %d of %s failed", claim.step, cid)
        store.end_run(
            claim,
            ctx.worker,
            _classified_error(type(e).__name__, str(e), "internal", False, "none"),
            ConversationStatus.ERROR,
        )
        return "error: internal"


def _run_claimed_step(
    store: ActionStore, ctx: StepContext, claim: StepClaim, started: float
) -> str:
    cid = claim.conversation_id
    stored = store.agent_spec_json(cid)
    if stored is None:
        store.end_run(
            claim,
            ctx.worker,
            _classified_error("NoAgent", "this conversation has no agent", "config", False, "none"),
            ConversationStatus.ERROR,
        )
        return "error: no agent"
    spec = AgentSpec.model_validate_json(stored[0])
    if stored[1]:  # set since the conversation was created
        spec = spec.model_copy(
            update={"confirmation_policy": policy_adapter.validate_json(stored[1])}
        )
    if claim.iteration > claim.max_iterations:
        store.end_run(
            claim,
            ctx.worker,
            _classified_error(
                "MaxIterationsReached",
                f"Agent reached maximum iterations limit ({claim.max_iterations}).",
                "agent_action",
                False,
                "none",
            ),
            ConversationStatus.ERROR,
        )
        return "error: max iterations"
    window = safe_window(store.recent_events(cid, ctx.settings.agent_history_events))
    stuck = detect_stuck(window) if spec.stuck_detection else None
    if stuck is not None:
        store.end_run(
            claim,
            ctx.worker,
            _classified_error(STUCK_CODE, str(stuck), "agent_action", False, "retry"),
            ConversationStatus.STUCK,
        )
        return "stuck"
    messages = render_messages(
        window,
        system_prompt=spec.system_prompt or DEFAULT_SYSTEM_PROMPT,
        first_user_message=store.first_user_message(cid),
    )
    names = spec.tools if spec.tools is not None else [tool.name for tool in registered_tools()]
    tools = _tool_specs(tuple(names))
    try:
        agent = make_agent(spec, ctx.settings, claim.replies)
        reply = agent.reply(messages, tools, step=claim.step)
    except ModelError as e:
        store.end_run(
            claim,
            ctx.worker,
            _classified_error(e.code, e.detail, e.kind, e.retryable, e.user_action),
            ConversationStatus.ERROR,
        )
        return f"error: {e.code}"
    calls = _new_calls(ctx, cid, reply)
    message = None
    if not calls:
        if reply.text:
            message = MessageEvent(
                source="agent",
                llm_message=LLMMessage(role="assistant", content=reply.text),
                llm_response_id=reply.response_id,
            )
        else:
            message = MessageEvent(
                source="environment", llm_message=LLMMessage(role="user", content=EMPTY_REPLY_NUDGE)
            )
    policy = spec.confirmation_policy
    hold = bool(calls) and not (len(calls) == 1 and calls[0].event.tool_name == FINISH_TOOL)
    hold = hold and any(needs_confirmation(policy, _tool_risk(c.event.tool_name)) for c in calls)
    result = store.record_step(
        claim, ctx.worker, message=message, calls=calls, hold=hold, finished=bool(reply.text)
    )
    if result is None:
        log.info("agent step %d of %s: dropped (no longer this worker's step)", claim.step, cid)
        return "dropped: stale step"
    send_work(cid, result, ctx.dispatch, ctx.send_step)
    log.info(
        "%6.2fs agent step %d of conversation %s -> %d call(s), %s",
        time.monotonic() - started,
        claim.step,
        cid,
        len(calls),
        result.status.value,
    )
    return f"{len(calls)} call(s)" if calls else result.status.value
