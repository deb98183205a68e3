"""``WS /sockets/events/{conversation_id}``: OpenHands' agent-server event
socket, what ``RemoteConversation`` listens to (docs/api.md, "WebSocket").

After the key (a first frame ``{"type": "auth", "session_api_key": ...}``,
``?session_api_key=`` or the ``X-Session-API-Key`` header) the socket sends
a ``full_state`` ``ConversationStateUpdateEvent``, the history asked for
(``resend_mode``), then every new event in the SDK's JSON; after each event
that ends a run, once it has caught up with the stream, a fresh ``full_state``
(not stored): ``RemoteConversation.run()`` returns on it. A frame from the
client that is an SDK ``Message`` is sent as a user message, with run.

The socket is accepted before anything is checked: refusing the handshake
would give the client an HTTP status, and it only stops retrying on the
close codes 4001 (the key) and 4004 (the conversation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from actionq.api.auth import is_valid_key, presented_key
from actionq.api.metrics import ApiMetrics
from actionq.api.openhands.events import sdk_event_json
from actionq.api.openhands.info import load_info
from actionq.api.schemas import SendMessageRequest, TextContent
from actionq.api.stream import StreamSlots, slot_key
from actionq.errors import (
    ActionqError,
    NotFoundError,
    StoreUnavailableError,
    StreamCapacityError,
    TooManyStreamsError,
)
from actionq.models import ConversationStateUpdateEvent, Event
from actionq.service import ActionQ
from actionq.store.follow import EventFollower

__all__ = [
    "AUTH_FRAME_SECONDS",
    "CLOSE_AUTH_FAILED",
    "CLOSE_NOT_FOUND",
    "FULL_STATE_KEY",
    "sockets_router",
]

log = logging.getLogger(__name__)

# How long a socket that came without a key may take to send its auth frame.
AUTH_FRAME_SECONDS = 10.0
# OpenHands' close codes; the client gives up on these two (a retry cannot help).
CLOSE_AUTH_FAILED = 4001
CLOSE_NOT_FOUND = 4004
# RFC 6455: policy violation (a bad query), server error, try again later.
CLOSE_BAD_REQUEST = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# The value of ``key`` that marks a snapshot of the whole state (the SDK's).
FULL_STATE_KEY = "full_state"
# A close frame's reason is at most 123 bytes (RFC 6455, 5.5.1).
_MAX_REASON_BYTES = 123

sockets_router = APIRouter()


class _Close(Exception):
    """End the socket with this close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _ClientText(BaseModel):
    # The SDK's TextContent has more fields (cache_prompt, ...): not ours to refuse.
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class _ClientPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str


class _ClientMessage(BaseModel):
    """An SDK ``Message`` as a client sends it (``Message.model_dump``: its
    many optional fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "system", "assistant", "tool"]
    content: list[_ClientText | _ClientPart]


@dataclass(frozen=True)
class _Replay:
    """Which stored events to send before the live ones."""

    mode: Literal["none", "all", "since"]
    after: datetime | None = None

    def wants(self, event: Event) -> bool:
        if self.mode != "since":
            return self.mode == "all"
        assert self.after is not None
        try:
            return _utc(datetime.fromisoformat(event.timestamp)) >= self.after
        except ValueError:  # pragma: no cover - the store writes ISO 8601
            return True


def _utc(moment: datetime) -> datetime:
    """Naive times are UTC (OpenHands' timestamps are naive)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _replay_of(query: QueryParams) -> _Replay:
    mode = query.get("resend_mode")
    if mode is None:
        resend_all = query.get("resend_all", "false").strip().lower()
        if resend_all not in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            raise _Close(CLOSE_BAD_REQUEST, "resend_all must be true or false")
        return _Replay("all" if resend_all in ("true", "1", "yes", "on") else "none")
    if mode == "all":
        return _Replay("all")
    if mode != "since":
        raise _Close(CLOSE_BAD_REQUEST, "resend_mode must be all or since")
    after = query.get("after_timestamp")
    if not after:
        raise _Close(CLOSE_BAD_REQUEST, "resend_mode=since needs after_timestamp")
    try:
        return _Replay("since", _utc(datetime.fromisoformat(after.strip())))
    except ValueError:
        raise _Close(CLOSE_BAD_REQUEST, "after_timestamp must be an ISO 8601 time") from None


async def _authenticate(websocket: WebSocket, keys: list[str]) -> str:
    """The key the client gave, if it is valid (``_Close`` 4001 otherwise):
    the header's or the query's, else the first frame's, within 10 s."""
    presented = presented_key(websocket.headers) or websocket.query_params.get("session_api_key")
    if not presented:
        try:
            message = await asyncio.wait_for(websocket.receive(), AUTH_FRAME_SECONDS)
        except TimeoutError:
            raise _Close(CLOSE_AUTH_FAILED, "no auth frame within 10 s") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        presented = _auth_frame_key(message.get("text") or message.get("bytes"))
    # The key itself is never logged, nor put in a close reason.
    if not presented or not is_valid_key(presented, keys):
        raise _Close(CLOSE_AUTH_FAILED, "authentication failed")
    return presented


def _auth_frame_key(data: str | bytes | None) -> str | None:
    try:
        frame = json.loads(data) if data else None
    except (ValueError, RecursionError):
        return None
    if isinstance(frame, dict) and frame.get("type") == "auth":
        key = frame.get("session_api_key")
        return key if isinstance(key, str) else None
    return None


async def _full_state(aq: ActionQ, conversation_id: str) -> str:
    """A ``full_state`` snapshot of the conversation as it is now (a fresh
    event, never stored: the SDK's server does not store it either)."""
    info = await run_in_threadpool(load_info, aq, conversation_id)
    event = ConversationStateUpdateEvent(key=FULL_STATE_KEY, value=info.model_dump(mode="json"))
    return sdk_event_json(event)


def _ends_run(event: Event) -> bool:
    return (
        isinstance(event, ConversationStateUpdateEvent)
        and event.key == "execution_status"
        and event.value != "running"
    )


async def _send_events(
    websocket: WebSocket,
    aq: ActionQ,
    follower: EventFollower,
    conversation_id: str,
    live_after: int,
    replay: _Replay,
) -> None:
    """The history asked for (events up to ``live_after``), then the live
    events; after a run ends, the snapshot, once the follower has caught up
    (so that it follows every event the run's end appended)."""
    if await run_in_threadpool(aq.is_archived, conversation_id):
        await _send_archived(websocket, aq, conversation_id, replay)
        return
    snapshot_due = False
    start = 0 if replay.mode != "none" else live_after
    async for batch in follower.batches(conversation_id, start):
        if batch is None:  # keep-alive: uvicorn pings the client itself
            continue
        for streamed in batch.events:
            event = streamed.event()
            if streamed.seq <= live_after:
                if replay.wants(event):
                    await websocket.send_text(sdk_event_json(event))
                continue
            await websocket.send_text(sdk_event_json(event))
            snapshot_due = snapshot_due or _ends_run(event)
        if snapshot_due and batch.caught_up:
            snapshot_due = False
            await websocket.send_text(await _full_state(aq, conversation_id))


async def _send_archived(
    websocket: WebSocket, aq: ActionQ, conversation_id: str, replay: _Replay
) -> None:
    """An archived conversation (read-only, out of Redis): the history asked
    for, from the archive, then nothing more until the client leaves (the
    socket stays open, as for a conversation with nothing going on; a
    message the client sends is refused and logged, never stored)."""
    after = 0
    while True:
        page = await run_in_threadpool(aq.list_events, conversation_id, after, 1000)
        for event in page.items:
            if replay.wants(event):
                await websocket.send_text(sdk_event_json(event))
        if page.next_after_seq is None:
            break
        after = page.next_after_seq
    await asyncio.Event().wait()


async def _receive_messages(websocket: WebSocket, aq: ActionQ, conversation_id: str) -> None:
    """Until the client leaves: its ``Message`` frames as user messages (with
    run), anything else ignored."""
    while True:
        received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            return
        text = _message_text(received.get("text") or received.get("bytes"))
        if text is None:
            continue
        try:
            await run_in_threadpool(aq.send_message, conversation_id, text, run=True)
        except (StoreUnavailableError, NotFoundError):
            raise
        except ActionqError as e:
            log.warning("socket of %s: message not sent: %s", conversation_id, e)


def _message_text(data: str | bytes | None) -> str | None:
    """The text of a user ``Message`` frame; None (logged) for anything else."""
    try:
        frame: Any = json.loads(data) if data else None
        message = _ClientMessage.model_validate(frame)
    except (ValueError, RecursionError, ValidationError):
        # Not a Message (an auth frame after the key came with the header,
        # bad JSON, ...): the frame itself may hold a key, so it is not logged.
        log.debug("socket frame ignored: not a Message (%d bytes)", len(data or ""))
        return None
    texts = [part for part in message.content if isinstance(part, _ClientText)]
    if message.role != "user" or not texts:
        log.debug("socket Message ignored: only user messages with text are sent")
        return None
    try:
        # The REST route's rules (a lone surrogate cannot be stored, ...).
        request = SendMessageRequest(
            role="user", content=[TextContent(text=part.text) for part in texts], run=True
        )
    except ValidationError as e:
        log.debug("socket Message ignored: %d error(s)", e.error_count())
        return None
    return request.text()


async def _stream(
    websocket: WebSocket,
    aq: ActionQ,
    follower: EventFollower,
    conversation_id: str,
    live_after: int,
    replay: _Replay,
) -> None:
    """Send and receive at once, until the client leaves or either side fails."""
    sending = asyncio.create_task(
        _send_events(websocket, aq, follower, conversation_id, live_after, replay)
    )
    receiving = asyncio.create_task(_receive_messages(websocket, aq, conversation_id))
    try:
        done, _ = await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, receiving):
            task.cancel()
        await asyncio.gather(sending, receiving, return_exceptions=True)
    for task in done:
        task.result()  # what ended it: the client leaving, or an error to close with


async def _serve(websocket: WebSocket, conversation_id: str) -> None:
    state = websocket.app.state
    key = await _authenticate(websocket, state.settings.api_keys)
    replay = _replay_of(websocket.query_params)
    aq: ActionQ = state.aq
    # The seq before the snapshot: every event after it is sent after the
    # snapshot, so nothing falls between them (the client drops duplicates by id).
    live_after = (await run_in_threadpool(aq.get_conversation, conversation_id)).last_seq
    slots: StreamSlots = state.stream_slots
    slot = slot_key(key)
    try:
        slots.acquire(slot)
    except (TooManyStreamsError, StreamCapacityError) as e:
        raise _Close(CLOSE_TRY_AGAIN_LATER, str(e)) from None
    metrics: ApiMetrics = state.metrics
    metrics.ws_clients.inc()
    try:
        await websocket.send_text(await _full_state(aq, conversation_id))
        await _stream(websocket, aq, state.follower, conversation_id, live_after, replay)
    finally:
        metrics.ws_clients.dec()
        slots.release(slot)


def _reason(text: str) -> str:
    """``text`` cut to what a close frame can carry."""
    encoded = text.encode()[:_MAX_REASON_BYTES]
    return encoded.decode(errors="ignore")


@sockets_router.websocket("/sockets/events/{conversation_id}")
async def events_socket(websocket: WebSocket, conversation_id: str) -> None:
    await websocket.accept()
    try:
        await _serve(websocket, conversation_id)
    except WebSocketDisconnect:
        return  # the client left
    except _Close as e:
        code, reason = e.code, e.reason
    except NotFoundError:
        code, reason = CLOSE_NOT_FOUND, f"no conversation {conversation_id}"
    except StoreUnavailableError as e:
        # The client reconnects (with backoff) and re-reads the history over REST.
        log.warning("socket of %s closed: %s", conversation_id, e)
        websocket.app.state.metrics.ws_errors.inc()
        code, reason = CLOSE_SERVER_ERROR, "the state store is unavailable; reconnect"
    else:
        return
    with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected):
        await websocket.close(code, _reason(reason))
