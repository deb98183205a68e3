"""The part of the store every other part builds on: the Redis client, the
Lua scripts (loaded once) and the translation of Redis errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any, Self

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from actionq.errors import StoreUnavailableError
from actionq.models import ConversationStatus
from actionq.store.keys import Keys

if TYPE_CHECKING:
    from actionq.store.records import BrokerList

__all__ = ["RedisStore"]


def _constants(keys: Keys) -> str:
    """The Lua constants ``_lib.lua`` starts from: the global keys the
    status-changing scripts keep (keys.py spells them, not the scripts)."""

    def long_string(text: str) -> str:
        if "]==]" in text:
            raise ValueError(f"key prefix {keys.prefix!r} may not contain ']==]'")
        return f"[==[{text}]==]"

    statuses = ", ".join(long_string(status.value) for status in ConversationStatus)
    return (
        f"local CONVERSATION_INDEX = {long_string(keys.conversation_index())}\n"
        f"local STATUS_INDEX_PREFIX = {long_string(keys.status_index(''))}\n"
        f"local STATUSES = {{{statuses}}}\n"
    )


def _load_scripts(client: redis.Redis, keys: Keys) -> dict[str, Script]:
    """Every script of the ``lua`` folder, by file name (a listing here once
    missed a new script: the folder is the list). ``_lib.lua`` is the shared
    prelude of each, not a script."""
    lua = resources.files("actionq.store") / "lua"
    lib = _constants(keys) + (lua / "_lib.lua").read_text()
    return {
        file.name.removesuffix(".lua"): client.register_script(lib + "\n" + file.read_text())
        for file in lua.iterdir()
        if file.name.endswith(".lua") and not file.name.startswith("_")
    }


class RedisStore:
    """A Redis client with actionq's scripts; see ``ActionStore``."""

    def __init__(
        self, client: redis.Redis, keys: Keys | None = None, broker: BrokerList | None = None
    ) -> None:
        self.redis = client
        self.keys = keys or Keys()
        # Set: transitions push Celery messages themselves (app/messaging/direct_enqueue.py).
        self.broker = broker
        self._scripts = _load_scripts(client, self.keys)
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str, prefix: str = "actionq", broker: BrokerList | None = None) -> Self:
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        return cls(client, Keys(prefix), broker)

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

    def _pipelined(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run the commands ``build`` queues in one round trip.

        Scripts go in by EVALSHA (``evalsha_in``): redis-py's own pipelined
        scripts send a SCRIPT EXISTS first, one more round trip on every call.
        If the server has lost the scripts (it restarted), they are loaded and
        the pipeline runs again; callers only queue commands that are safe to
        repeat.
        """
        pipe = self._thread_pipeline()
        for attempt in (1, 2):
            try:
                build(pipe)
                return list(self._call(pipe.execute))
            except NoScriptError:
                if attempt == 2:
                    raise
                self._load_scripts_into_server()
            finally:
                pipe.reset()
        raise AssertionError("unreachable")

    def _thread_pipeline(self) -> Pipeline:
        # A pipeline object is reused per thread: creating one copies redis-py's
        # table of ~170 response callbacks, ~0.15 ms, more than the round trip.
        pipe: Pipeline | None = getattr(self._local, "pipeline", None)
        if pipe is None:
            pipe = self.redis.pipeline(transaction=False)
            self._local.pipeline = pipe
        return pipe

    def _load_scripts_into_server(self) -> None:
        for script in self._scripts.values():
            self._call(partial(self.redis.script_load, script.script))

    def evalsha_in(
        self, pipe: Pipeline, name: str, keys: Sequence[str], args: Sequence[Any]
    ) -> None:
        """Queue the script ``name`` on ``pipe`` (see ``_pipelined``)."""
        pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)

    def ping(self) -> bool:
        return bool(self._call(self.redis.ping))

    def server_time(self) -> float:
        seconds, micros = self._call(self.redis.time)
        return float(seconds) + float(micros) / 1_000_000
