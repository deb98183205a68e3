"""The HTTP routes. Every route but ``/health`` needs an API key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from actionq.api.auth import require_api_key
from actionq.api.openhands.events import envelope_json, sdk_event
from actionq.api.openhands.info import ConversationInfo, info_of, load_info
from actionq.api.openhands.start import StartConversationRequest, agent_spec_of
from actionq.api.schemas import (
    ActionResponse,
    ConfirmationPolicyRequest,
    ConfirmationResponse,
    ConversationPage,
    ErrorResponse,
    EventEnvelopePage,
    EventSearchPage,
    HealthResponse,
    RetryRequest,
    SendMessageRequest,
    SubmitActionRequest,
    Success,
)
from actionq.api.stream import MAX_SEQ
from actionq.errors import BadRequestError, ConfigurationError, ConversationNotFound, NotFoundError
from actionq.models import ConversationStatus, Event, MessageEvent
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
# An opaque cursor (a position or a seq). 18 digits: beyond them Redis would
# refuse the number (a 500), and no real cursor comes near.
PageId = Annotated[str | None, Query(max_length=18, pattern=r"^[0-9]+$")]


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
    response_model=ConversationInfo,
    tags=["conversations"],
    responses={200: {"model": ConversationInfo, "description": "It existed already (same id)"}},
)
def create_conversation(
    aq: AQ, request: Request, response: Response, body: StartConversationRequest | None = None
) -> ConversationInfo:
    """Create a conversation (201), OpenHands' ``StartConversationRequest``;
    with the ``conversation_id`` of one that exists, return it unchanged (200;
    its ``initial_message`` is not sent). A request actionq cannot run (an
    unknown tool or model profile, a feature it lacks) is refused (400) and
    stores nothing. docs/openhands.md"""
    body = body or StartConversationRequest()
    spec = agent_spec_of(body, request.app.state.secret_box)
    try:
        conversation, created = aq.create_conversation_checked(body.conversation_id, agent=spec)
    except ConfigurationError as e:
        # The request names something the server does not have (a model
        # profile): the client's to fix, and nothing was stored.
        raise BadRequestError(f"agent: {e}") from e
    if not created:
        response.status_code = 200
    elif body.initial_message is not None:
        message = body.initial_message
        aq.send_message(conversation.id, message.text(), run=message.run)
    return load_info(aq, conversation.id)


@protected.get("/api/conversations/search", response_model=ConversationPage, tags=["conversations"])
def search_conversations(
    aq: AQ,
    page_id: PageId = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    status: ConversationStatus | None = None,
    sort_order: Literal["CREATED_AT", "CREATED_AT_DESC"] = "CREATED_AT_DESC",
) -> ConversationPage:
    """A page of conversations, newest first by default; follow
    ``next_page_id``. With ``status``, only those (read from the per-status
    index: a page costs the same whatever the number of conversations)."""
    found, next_position = aq.store.search_conversations(
        int(page_id or 0),
        limit,
        status.value if status else None,
        newest_first=sort_order == "CREATED_AT_DESC",
    )
    items = [info_of(aq, conversation, archived=False) for conversation in found]
    return ConversationPage(
        items=items, next_page_id=None if next_position is None else str(next_position)
    )


@protected.get("/api/conversations/count", response_model=int, tags=["conversations"])
def count_conversations(aq: AQ, status: ConversationStatus | None = None) -> int:
    if status is None:
        return aq.count_conversations()
    return aq.store.count_conversations_with_status(status.value)


@protected.get(
    "/api/conversations", response_model=list[ConversationInfo | None], tags=["conversations"]
)
def batch_get_conversations(
    aq: AQ, ids: Annotated[list[str], Query(max_length=100)]
) -> list[ConversationInfo | None]:
    """The conversations with these ids, in order (null: no such conversation)."""
    infos: list[ConversationInfo | None] = []
    for cid in ids:
        try:
            infos.append(load_info(aq, cid))
        except ConversationNotFound:
            infos.append(None)
    return infos


@protected.get(
    "/api/conversations/{conversation_id}", response_model=ConversationInfo, tags=["conversations"]
)
def get_conversation(conversation_id: str, aq: AQ) -> ConversationInfo:
    """OpenHands' ``ConversationInfo``, with actionq's fields. It never says
    ``running`` on the claim of a worker whose lease is gone: that work is
    recorded as crashed first."""
    return load_info(aq, conversation_id)


@protected.delete(
    "/api/conversations/{conversation_id}", response_model=Success, tags=["conversations"]
)
def delete_conversation(conversation_id: str, aq: AQ) -> Success:
    """Delete the conversation and its history (409 while it runs or waits
    for confirmation: pause or interrupt it first; an archived one: 409, it
    is read-only). Its workspace folder stays."""
    aq.delete_conversation(conversation_id)
    return Success()


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
    response_model=ConversationInfo,
    tags=["conversations"],
)
def resume_conversation(conversation_id: str, aq: AQ) -> ConversationInfo:
    """actionq's own: from ``error`` or ``paused``, the next queued action runs
    (409 otherwise); no agent step starts (``run`` does that)."""
    aq.resume(conversation_id)
    return load_info(aq, conversation_id)


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
    response_model=Success,
    tags=["conversations"],
)
def run_conversation(conversation_id: str, aq: AQ) -> Success:
    """Run from ``idle``, ``paused``, ``error``, ``stuck`` (nothing that crashed
    runs again) or ``waiting_for_confirmation`` (accepts the held calls);
    409 if it is running. A ``finished`` one is left as it is."""
    aq.run(conversation_id)
    return Success()


@protected.post(
    "/api/conversations/{conversation_id}/pause",
    response_model=Success,
    tags=["conversations"],
)
def pause_conversation(conversation_id: str, aq: AQ) -> Success:
    """Pause between steps: nothing new starts until ``run``; the tool call or
    model step in flight finishes and is recorded (``/interrupt`` stops it).
    409 in ``error`` or ``waiting_for_confirmation``."""
    aq.pause(conversation_id)
    return Success()


@protected.post(
    "/api/conversations/{conversation_id}/interrupt",
    response_model=Success,
    tags=["conversations"],
)
def interrupt_conversation(conversation_id: str, aq: AQ) -> Success:
    """Pause now: a running tool call is killed and recorded as cancelled, a
    model step in flight is dropped (asked again on the next ``run``)."""
    aq.interrupt(conversation_id)
    return Success()


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
    "/api/conversations/{conversation_id}/events/page",
    response_model=EventEnvelopePage,
    tags=["events"],
)
def list_events(
    conversation_id: str,
    aq: AQ,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """actionq's own: events with seq > ``after_seq``, each with its seq and
    a crash's detail; follow ``next_after_seq``."""
    page = aq.list_events(conversation_id, after_seq, limit)
    # envelope() is EventEnvelope's JSON already: no second validation.
    items = ",".join(envelope_json(e) for e in page.items)
    next_after_seq = json.dumps(page.next_after_seq)
    return Response(
        f'{{"items":[{items}],"next_after_seq":{next_after_seq}}}', media_type="application/json"
    )


@dataclass(frozen=True)
class _EventFilter:
    """OpenHands' event search filters (all optional, all must hold)."""

    kind: str | None = None
    source: str | None = None
    body: str | None = None
    timestamp_gte: datetime | None = None
    timestamp_lt: datetime | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in astuple(self))

    def matches(self, event: Event) -> bool:
        if self.kind is not None and event.kind != self.kind:
            return False
        if self.source is not None and event.source != self.source:
            return False
        if self.timestamp_gte is not None or self.timestamp_lt is not None:
            at = _aware(datetime.fromisoformat(event.timestamp))
            if self.timestamp_gte is not None and at < _aware(self.timestamp_gte):
                return False
            if self.timestamp_lt is not None and at >= _aware(self.timestamp_lt):
                return False
        return self.body is None or (
            isinstance(event, MessageEvent)
            and self.body.lower() in event.llm_message.content.lower()
        )


def _aware(moment: datetime) -> datetime:
    """A time without a zone is UTC (actionq's events are stamped in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _event_filter(
    kind: Annotated[str | None, Query(max_length=100)] = None,
    source: Literal["agent", "user", "environment"] | None = None,
    body: Annotated[str | None, Query(max_length=1000)] = None,
    timestamp__gte: datetime | None = None,
    timestamp__lt: datetime | None = None,
) -> _EventFilter:
    return _EventFilter(kind, source, body, timestamp__gte, timestamp__lt)


EventFilter = Annotated[_EventFilter, Depends(_event_filter)]


def _walk(
    aq: ActionQ, conversation_id: str, first: int, last_seq: int, descending: bool, chunk: int
) -> Iterator[Event]:
    """The events from seq ``first`` on, up to ``last_seq`` (or down to 1),
    read ``chunk`` at a time (what a page may look at: no more is parsed)."""
    if not descending:
        after = first - 1
        while after < last_seq:
            page = aq.list_events(conversation_id, after, min(chunk, last_seq - after))
            if not page.items:
                return
            yield from page.items
            after = page.items[-1].seq
        return
    top = min(first, last_seq)
    while top >= 1:
        bottom = max(1, top - chunk + 1)
        page = aq.list_events(conversation_id, bottom - 1, top - bottom + 1)
        yield from reversed(page.items)
        top = bottom - 1


@protected.get(
    "/api/conversations/{conversation_id}/events/search",
    response_model=EventSearchPage,
    tags=["events"],
)
def search_events(
    conversation_id: str,
    aq: AQ,
    where: EventFilter,
    page_id: PageId = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    sort_order: Literal["TIMESTAMP", "TIMESTAMP_DESC"] = "TIMESTAMP",
) -> EventSearchPage:
    """OpenHands' event search: events in the SDK's JSON, oldest first
    (``TIMESTAMP_DESC``: newest first). ``next_page_id`` is opaque (actionq:
    the seq to go on from). With filters, a page looks at no more than
    10,000 events and may hold fewer than ``limit``."""
    descending = sort_order == "TIMESTAMP_DESC"
    budget = _EVENT_SCAN_LIMIT if where else limit
    last_seq = aq.get_conversation(conversation_id).last_seq
    first = int(page_id) if page_id else (last_seq if descending else 1)
    items: list[dict[str, Any]] = []
    next_seq: int | None = None
    walk = _walk(aq, conversation_id, first, last_seq, descending, min(1000, budget))
    for scanned, event in enumerate(walk, 1):
        if where.matches(event):
            items.append(sdk_event(event))
        if len(items) == limit or scanned == budget:
            # seqs are contiguous: the page goes on from the next one.
            next_seq = event.seq - 1 if descending else event.seq + 1
            break
    if next_seq is not None and not 1 <= next_seq <= last_seq:
        next_seq = None
    return EventSearchPage(items=items, next_page_id=None if next_seq is None else str(next_seq))


@protected.get(
    "/api/conversations/{conversation_id}/events/count", response_model=int, tags=["events"]
)
def count_events(conversation_id: str, aq: AQ, where: EventFilter) -> int:
    if not where:
        return aq.get_conversation(conversation_id).last_seq
    return sum(1 for e in aq.all_events(conversation_id) if where.matches(e))


@protected.get(
    "/api/conversations/{conversation_id}/events", response_model=list[dict[str, Any] | None],
    tags=["events"],
)  # fmt: skip
def batch_get_events(
    conversation_id: str, aq: AQ, event_ids: Annotated[list[str], Query(max_length=100)]
) -> list[dict[str, Any] | None]:
    """The events with these ids, in order (null: none with that id)."""
    wanted = set(event_ids)
    found = {e.id: e for e in aq.all_events(conversation_id) if e.id in wanted}
    return [sdk_event(found[i]) if i in found else None for i in event_ids]


@protected.get(
    "/api/conversations/{conversation_id}/events/{event_id}",
    response_model=dict[str, Any],
    tags=["events"],
)
def get_event(conversation_id: str, event_id: str, aq: AQ) -> dict[str, Any]:
    """One event in the SDK's JSON (404 if the conversation has none with this id)."""
    event = aq.find_event(conversation_id, event_id)
    if event is None:
        raise NotFoundError(f"conversation {conversation_id} has no event {event_id!r}")
    return sdk_event(event)


# A filtered page reads at most this many conversations or events.
_EVENT_SCAN_LIMIT = 10_000
