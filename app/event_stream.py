"""Following a conversation's events as they are appended (for SSE).

A blocking ``XREAD`` on the conversation's event stream from the last seen
entry: each wait costs one Redis round trip, each delivered page at most
``count`` events, whatever the length of the history.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import StoreUnavailableError
from app.keys import Keys

__all__ = ["EventFollower", "StreamedEvent"]


@dataclass(frozen=True)
class StreamedEvent:
    """One event as it goes on the wire: the stored JSON with its ``seq``
    added, without a round trip through the pydantic models (a replay of a
    long history is CPU-bound otherwise)."""

    seq: int
    kind: str
    json: str


class EventFollower:
    def __init__(self, redis_url: str, keys: Keys) -> None:
        self.keys = keys
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)

    async def follow(
        self, conversation_id: str, after_seq: int, block_ms: int = 15_000, count: int = 100
    ) -> AsyncIterator[StreamedEvent | None]:
        """Yield events with seq > ``after_seq`` forever; ``None`` after each
        ``block_ms`` without news (a chance to send a keep-alive)."""
        key = self.keys.events(conversation_id)
        last_id = f"{after_seq}-0"
        while True:
            try:
                reply: Any = await self.redis.xread({key: last_id}, count=count, block=block_ms)
            except (RedisConnectionError, RedisTimeoutError) as e:
                raise StoreUnavailableError(f"event stream unavailable: {e}") from e
            if not reply:
                yield None
                continue
            for entry_id, fields in reply[0][1]:
                last_id = str(entry_id)
                seq = int(last_id.split("-", 1)[0])
                stored = str(fields["e"])
                kind = json.loads(stored)["kind"]
                yield StreamedEvent(seq, kind, f'{{"seq":{seq},{stored[1:]}')

    async def close(self) -> None:
        await self.redis.aclose()
