"""The HTTP routes. Every route but ``/health`` needs an API key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from actionq.api.auth import require_api_key
from actionq.api.schemas import (
    ActionResponse,
    ConfirmationPolicyRequest,
    ConfirmationResponse,
    ConversationList,
    CreateConversationRequest,
    ErrorResponse,
    HealthResponse,
    RetryRequest,
    SendMessageRequest,
    SubmitActionRequest,
    Success,
)
from actionq.api.stream import MAX_SEQ
from actionq.errors import BadRequestError, ConfigurationError
from actionq.models import Conversation, EventPage
from actionq.service import ActionQ

__all__ = ["protected", "public"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 422, 503)
}
public = APIRouter()
protected = APIRouter(dependencies=[Depends(require_api_key)], responses=_ERRORS)


def _aq(request: Request) -> ActionQ:
    aq: ActionQ = request.app.state.aq
    return aq


AQ = Annotated[ActionQ, Depends(_aq)]


@public.get("/health", response_model=HealthResponse, tags=["service"])
@public.head("/health", include_in_schema=False)
def health(aq: AQ, response: Response) -> HealthResponse:
    """200 when Redis answers and at least one worker holds a lease, else 503."""
    redis_ok, workers = aq.health()
    healthy = redis_ok and workers > 0
    response.status_code = 200 if healthy else 503
    return HealthResponse(
        status="ok" if healthy else "degraded", redis=redis_ok, live_workers=workers
    )


@protected.get("/metrics", tags=["service"], response_class=Response)
def metrics(request: Request, aq: AQ) -> Response:
    """Prometheus metrics."""
    api_metrics = request.app.state.metrics
    api_metrics.live_workers.set(aq.live_worker_count())
    api_metrics.conversations.set(aq.count_conversations())
    return Response(generate_latest(api_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@protected.post(
    "/api/conversations",
    status_code=201,
    response_model=Conversation,
    tags=["conversations"],
    responses={200: {"model": Conversation, "description": "It existed already (same id)"}},
)
def create_conversation(
    aq: AQ, response: Response, body: CreateConversationRequest | None = None
) -> Conversation:
    """Create a conversation (201); with the ``id`` of one that exists, return
    it unchanged (200; its ``initial_message`` is not sent). With ``agent``,
    messages and ``run`` drive it; an LLM agent's model profile must be known
    to the server (400 otherwise, nothing stored)."""
    body = body or CreateConversationRequest()
    try:
        conversation, created = aq.create_conversation_checked(body.id, agent=body.agent)
    except ConfigurationError as e:
        # The request names something the server does not have (a model
        # profile): the client's to fix, and nothing was stored.
        raise BadRequestError(f"agent: {e}") from e
    if not created:
        response.status_code = 200
    elif body.initial_message is not None:
        message = body.initial_message
        conversation = aq.send_message(conversation.id, message.text(), run=message.run)
    return conversation


@protected.get("/api/conversations", response_model=ConversationList, tags=["conversations"])
def list_conversations(
    aq: AQ,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ConversationList:
    items = aq.list_conversations(offset, limit)
    more = offset + limit < aq.count_conversations()
    return ConversationList(items=items, next_offset=offset + limit if more else None)


@protected.get(
    "/api/conversations/{conversation_id}", response_model=Conversation, tags=["conversations"]
)
def get_conversation(conversation_id: str, aq: AQ) -> Conversation:
    return aq.get_conversation(conversation_id)


@protected.post(
    "/api/conversations/{conversation_id}/actions",
    status_code=201,
    response_model=ActionResponse,
    tags=["actions"],
    responses={200: {"model": ActionResponse, "description": "Existing action (idempotency key)"}},
)
def submit_action(
    conversation_id: str, body: SubmitActionRequest, aq: AQ, request: Request, response: Response
) -> ActionResponse:
    """Post a tool call. Unknown tool: 400; arguments the tool refuses: 422.
    With an ``idempotency_key`` used before, the existing action is returned (200)."""
    action, created = aq.submit(
        conversation_id,
        body.tool,
        body.arguments,
        tool_call_id=body.tool_call_id,
        idempotency_key=body.idempotency_key,
        thought=body.thought,
        check_tool=True,
    )
    if created:
        request.app.state.metrics.actions_submitted.inc()
    else:
        response.status_code = 200
    return ActionResponse.of(action)


@protected.post(
    "/api/conversations/{conversation_id}/resume",
    response_model=Conversation,
    tags=["conversations"],
)
def resume_conversation(conversation_id: str, aq: AQ) -> Conversation:
    """From ``error`` or ``paused``: the next queued action runs (409 otherwise)."""
    return aq.resume(conversation_id)


@protected.post(
    "/api/conversations/{conversation_id}/events",
    response_model=Success,
    tags=["events"],
)
def send_message(conversation_id: str, body: SendMessageRequest, aq: AQ) -> Success:
    """A user message (a ``MessageEvent``); with ``run`` the conversation runs
    (a running agent reads it at its next step). A ``finished`` or ``stuck``
    conversation goes back to ``idle``."""
    aq.send_message(conversation_id, body.text(), run=body.run)
    return Success()


@protected.post(
    "/api/conversations/{conversation_id}/run",
    response_model=Conversation,
    tags=["conversations"],
)
def run_conversation(conversation_id: str, aq: AQ) -> Conversation:
    """Run from ``idle``, ``paused``, ``error``, ``stuck`` (nothing that crashed
    runs again) or ``waiting_for_confirmation`` (accepts the held calls);
    409 if it is running. A ``finished`` one is left as it is."""
    return aq.run(conversation_id)


@protected.post(
    "/api/conversations/{conversation_id}/pause",
    response_model=Conversation,
    tags=["conversations"],
)
def pause_conversation(conversation_id: str, aq: AQ) -> Conversation:
    """Pause between steps: nothing new starts until ``run``; the tool call or
    model step in flight finishes and is recorded (``/interrupt`` stops it).
    409 in ``error`` or ``waiting_for_confirmation``."""
    return aq.pause(conversation_id)


@protected.post(
    "/api/conversations/{conversation_id}/interrupt",
    response_model=Conversation,
    tags=["conversations"],
)
def interrupt_conversation(conversation_id: str, aq: AQ) -> Conversation:
    """Pause now: a running tool call is killed and recorded as cancelled, a
    model step in flight is dropped (asked again on the next ``run``)."""
    return aq.interrupt(conversation_id)


@protected.post(
    "/api/conversations/{conversation_id}/events/respond_to_confirmation",
    response_model=Success,
    tags=["events"],
)
def respond_to_confirmation(conversation_id: str, body: ConfirmationResponse, aq: AQ) -> Success:
    """Accept the calls waiting for confirmation (they run, once) or reject
    them (each gets a ``UserRejectObservation`` with ``reason``; the
    conversation goes to ``idle``). 409 if nothing waits."""
    aq.respond_to_confirmation(conversation_id, accept=body.accept, reason=body.reason)
    return Success()


@protected.post(
    "/api/conversations/{conversation_id}/confirmation_policy",
    response_model=Success,
    tags=["conversations"],
)
def set_confirmation_policy(
    conversation_id: str, body: ConfirmationPolicyRequest, aq: AQ
) -> Success:
    """The policy for the agent's next replies (calls already waiting keep
    waiting). 409 for a conversation without an agent."""
    aq.set_confirmation_policy(conversation_id, body.policy)
    return Success()


@protected.get("/api/actions/{action_id}", response_model=ActionResponse, tags=["actions"])
def get_action(action_id: str, aq: AQ) -> ActionResponse:
    return ActionResponse.of(aq.get_action(action_id))


@protected.post(
    "/api/actions/{action_id}/retry", status_code=201, response_model=ActionResponse,
    tags=["actions"],
)  # fmt: skip
def retry_action(action_id: str, aq: AQ, body: RetryRequest | None = None) -> ActionResponse:
    """A new action with the same call; 409 if quarantined (unless ``force``)."""
    return ActionResponse.of(aq.retry_action(action_id, force=bool(body and body.force)))


@protected.get(
    "/api/conversations/{conversation_id}/events", response_model=EventPage, tags=["events"]
)
def list_events(
    conversation_id: str,
    aq: AQ,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """Events with seq > ``after_seq``; follow ``next_after_seq`` for the next page."""
    return aq.list_events(conversation_id, after_seq, limit)
