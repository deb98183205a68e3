"""The part of the store every other part builds on: the Redis client, the
Lua scripts (loaded once) and the translation of Redis errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Self

import redis
from redis.commands.core import Script

from app.errors import StoreUnavailableError
from app.keys import Keys

__all__ = ["RedisStore"]

_SCRIPT_NAMES = (
    "create_conversation",
    "submit_action",
    "claim_action",
    "finish_action",
    "stop_conversation",
    "renew_lease",
    "resume_conversation",
    "pause_conversation",
    "forget_worker",
)


def _load_scripts(client: redis.Redis) -> dict[str, Script]:
    lua = resources.files("app") / "lua"
    lib = (lua / "_lib.lua").read_text()
    return {
        name: client.register_script(lib + "\n" + (lua / f"{name}.lua").read_text())
        for name in _SCRIPT_NAMES
    }


class RedisStore:
    """A Redis client with actionq's scripts; see ``ActionStore``."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self._scripts = _load_scripts(client)

    @classmethod
    def from_url(cls, url: str, prefix: str = "actionq") -> Self:
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        return cls(client, Keys(prefix))

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run a Redis call; redis-py's replies are loosely typed, so callers
        convert what they read explicitly."""
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreUnavailableError(f"Redis state store unavailable: {e}") from e

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        return self._call(lambda: script(keys=list(keys), args=list(args)))

    def ping(self) -> bool:
        return bool(self._call(self.redis.ping))

    def server_time(self) -> float:
        seconds, micros = self._call(self.redis.time)
        return float(seconds) + float(micros) / 1_000_000
