"""Following a conversation's events as they are appended (for SSE and the
WebSocket).

A blocking ``XREAD`` on the conversation's event stream from the last seen
entry: each wait costs one Redis round trip, each delivered page at most
``count`` events, whatever the length of the history.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actionq.errors import StoreUnavailableError
from actionq.models import Event
from actionq.store.connect import async_client
from actionq.store.keys import Keys
from actionq.store.records import event_from_stored

__all__ = ["KEEPALIVE_SECONDS", "EventBatch", "EventFollower", "StreamedEvent"]

# Silence after which a stream gets a keep-alive comment: under FastAPI's
# own 15 s ``: ping``, so that one kind of comment is sent, not both.
KEEPALIVE_SECONDS = 10.0
# How much longer than a blocking read the socket may stay silent before
# the server counts as gone.
_READ_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class StreamedEvent:
    """One event as the stream holds it: its ``seq``, its ``kind`` and its
    stored JSON (``stored``, without the seq)."""

    seq: int
    kind: str
    stored: str

    def event(self) -> Event:
        """The event as the store's readers return it."""
        return event_from_stored(self.stored, self.seq)


@dataclass(frozen=True)
class EventBatch:
    """The events one read returned; ``caught_up``: there were no more to
    read then (the events of one transition are appended at once, so a
    reader that has caught up has all of them)."""

    events: list[StreamedEvent]
    caught_up: bool


class EventFollower:
    def __init__(
        self, redis_url: str, keys: Keys, keepalive_seconds: float = KEEPALIVE_SECONDS
    ) -> None:
        self.keys = keys
        self.block_ms = int(keepalive_seconds * 1000)
        # redis-py applies socket_timeout to every read, blocking commands
        # included, and since redis-py 8 it defaults to 5 s: an XREAD
        # blocking longer than that failed with a TimeoutError. Allow the
        # block plus a margin, so a server that stops answering is still noticed.
        self.redis = async_client(
            redis_url,
            socket_timeout=keepalive_seconds + _READ_MARGIN_SECONDS,
            socket_connect_timeout=5.0,
        )

    async def follow(
        self,
        conversation_id: str,
        after_seq: int,
        deadline: float | None = None,
        count: int = 100,
    ) -> AsyncIterator[StreamedEvent | None]:
        """Yield events with seq > ``after_seq`` until ``deadline``
        (``time.monotonic()``; None: forever); ``None`` after each
        keep-alive interval without news."""
        async for batch in self.batches(conversation_id, after_seq, deadline, count):
            if batch is None:
                yield None
                continue
            for event in batch.events:
                yield event

    async def batches(
        self,
        conversation_id: str,
        after_seq: int,
        deadline: float | None = None,
        count: int = 100,
    ) -> AsyncIterator[EventBatch | None]:
        """As ``follow``, a read at a time (at most ``count`` events each)."""
        key = self.keys.events(conversation_id)
        last_id = f"{after_seq}-0"
        caught_up = True
        while True:
            wait_ms = self.block_ms
            if deadline is not None:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    return
                wait_ms = min(wait_ms, remaining_ms)
            # After a full read, more may be there already: look without
            # waiting, so that a reader learns at once that it caught up.
            block = wait_ms if caught_up else None
            try:
                reply: Any = await self.redis.xread({key: last_id}, count=count, block=block)
            except (RedisConnectionError, RedisTimeoutError) as e:
                raise StoreUnavailableError(f"event stream unavailable: {e}") from e
            entries = reply[0][1] if reply else []
            if not entries and caught_up:
                if wait_ms == self.block_ms:
                    yield None
                continue
            events = []
            for entry_id, fields in entries:
                last_id = str(entry_id)
                stored = str(fields["e"])
                kind = json.loads(stored)["kind"]
                events.append(StreamedEvent(int(last_id.split("-", 1)[0]), kind, stored))
            caught_up = len(events) < count
            yield EventBatch(events, caught_up)

    async def close(self) -> None:
        await self.redis.aclose()
