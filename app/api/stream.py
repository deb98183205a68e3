"""``GET /api/conversations/{id}/events/stream``: a conversation's events as
Server-Sent Events. Everything that can refuse the request (the key, the
conversation, the ``Last-Event-ID``) is checked before the response starts.
An archived conversation's stream is its events, then the end (nothing is
live any more)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from actionq.api.auth import Credential, require_api_key
from actionq.api.openhands.events import envelope_json
from actionq.api.schemas import ErrorResponse
from actionq.errors import (
    BadRequestError,
    StoreUnavailableError,
    StreamCapacityError,
    TooManyStreamsError,
)
from actionq.service import ActionQ
from actionq.store.follow import EventFollower

__all__ = ["MAX_SEQ", "StreamSlots", "slot_key", "stream_router"]

log = logging.getLogger(__name__)

# Sequence numbers are Redis stream ids: keep them well inside 64 bits.
MAX_SEQ = 2**53
_SEQ = re.compile(r"[0-9]{1,20}")

stream_router = APIRouter(dependencies=[Depends(require_api_key)])


@dataclass(frozen=True)
class StreamStart:
    conversation_id: str
    after_seq: int
    archived: bool = False


def _stream_start(
    conversation_id: str,
    request: Request,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[
        str | None,
        Header(description="Seq of the last event received; wins over after_seq."),
    ] = None,
) -> StreamStart:
    """The checks that must answer before the stream starts (404, 400)."""
    start = after_seq
    if last_event_id is not None and last_event_id.strip():
        value = last_event_id.strip()
        if not _SEQ.fullmatch(value):
            raise BadRequestError(
                f"Last-Event-ID must be the seq of an event (a non-negative integer), "
                f"got {value[:40]!r}"
            )
        start = min(int(value), MAX_SEQ)
    aq: ActionQ = request.app.state.aq
    aq.get_conversation(conversation_id)  # ConversationNotFound: 404
    archived = aq.archive is not None and aq.is_archived(conversation_id)
    return StreamStart(conversation_id, start, archived)


async def _archived_events(
    aq: ActionQ, start: StreamStart, until_seq: int | None
) -> AsyncIterator[ServerSentEvent]:
    """The archived conversation's events after ``start.after_seq``, then the end."""
    after = start.after_seq
    while True:
        page = await run_in_threadpool(aq.list_events, start.conversation_id, after, 1000)
        for event in page.items:
            if until_seq is not None and event.seq > until_seq:
                return
            yield ServerSentEvent(
                raw_data=envelope_json(event), event=event.kind, id=str(event.seq)
            )
        if page.next_after_seq is None:
            return
        after = page.next_after_seq


def slot_key(api_key: str) -> str:
    """What ``StreamSlots`` counts a key by: a digest, so the key itself is
    not kept in memory longer than the request."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


class StreamSlots:
    """Counts open streams (SSE and WebSockets), in total and per API key
    (each holds a Redis connection while it waits). Used from the event loop
    only."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self.open_by_key: dict[str, int] = {}

    def acquire(self, key: str) -> None:
        if self.open_by_key.get(key, 0) >= self.per_key:
            raise TooManyStreamsError(
                f"this API key has {self.per_key} event streams open already "
                "(ACTIONQ_API_MAX_STREAMS_PER_KEY); close one first"
            )
        if sum(self.open_by_key.values()) >= self.total:
            raise StreamCapacityError(
                f"the API serves {self.total} event streams already (ACTIONQ_API_MAX_STREAMS); "
                "retry later"
            )
        self.open_by_key[key] = self.open_by_key.get(key, 0) + 1

    def release(self, key: str) -> None:
        left = self.open_by_key.get(key, 0) - 1
        if left > 0:
            self.open_by_key[key] = left
        else:
            self.open_by_key.pop(key, None)


async def _stream_slot(
    request: Request,
    start: Annotated[StreamStart, Depends(_stream_start)],
    credential: Annotated[Credential, Depends(require_api_key)],
) -> AsyncIterator[StreamStart]:
    """A slot for the whole life of the stream (429/503 before it starts),
    counted against the key it sent or whose session it holds."""
    slots: StreamSlots = request.app.state.stream_slots
    key = slot_key(credential.key)
    slots.acquire(key)
    try:
        yield start
    finally:
        slots.release(key)


@stream_router.get(
    "/api/conversations/{conversation_id}/events/stream",
    response_class=EventSourceResponse,
    tags=["events"],
    responses={429: {"model": ErrorResponse}},
)
async def stream_events(
    request: Request,
    start: Annotated[StreamStart, Depends(_stream_slot)],
    until_seq: Annotated[
        int | None,
        Query(ge=1, le=MAX_SEQ, description="End the stream after the event with this seq."),
    ] = None,
    timeout: Annotated[
        float | None,
        Query(gt=0, le=86_400, description="End the stream after this many seconds."),
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: every event with seq > ``after_seq`` (or > the
    ``Last-Event-ID`` header, which wins), then new ones as they happen,
    until ``until_seq`` or ``timeout`` if given, else until the client leaves.
    Each message is the event's envelope, as ``/events/page`` has it (the
    OpenHands event, its seq, a crash's detail); its SSE ``event`` is the
    event's kind and its ``id`` the seq, so a reconnecting client misses nothing."""
    follower: EventFollower = request.app.state.follower
    gauge = request.app.state.metrics.sse_clients
    deadline = None if timeout is None else time.monotonic() + timeout
    if until_seq is not None and start.after_seq >= until_seq:
        return
    if start.archived:
        async for message in _archived_events(request.app.state.aq, start, until_seq):
            yield message
        return
    gauge.inc()
    try:
        async for event in follower.follow(start.conversation_id, start.after_seq, deadline):
            if await request.is_disconnected():
                return
            if event is None:
                yield ServerSentEvent(comment="keep-alive")
                continue
            # The stored kinds are OpenHands' kinds: the SSE `event` is the kind.
            yield ServerSentEvent(
                raw_data=envelope_json(event.event()), event=event.kind, id=str(event.seq)
            )
            if until_seq is not None and event.seq >= until_seq:
                return
    except StoreUnavailableError as e:
        # The response has started: all that is left is to end it; the
        # client reconnects with Last-Event-ID.
        log.warning("event stream of %s ended: %s", start.conversation_id, e)
        request.app.state.metrics.sse_errors.inc()
    finally:
        gauge.dec()
