"""The part of the store every other part builds on: the Redis client, the
Lua scripts (loaded once) and the translation of Redis errors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any, Self

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)

from actionq.errors import StoreUnavailableError
from actionq.models import ConversationStatus
from actionq.store.connect import sync_client
from actionq.store.keys import Keys

if TYPE_CHECKING:
    from actionq.settings import Settings
    from actionq.store.records import BrokerList

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

# What a script returns, under Cluster, when it moved the conversation
# between per-status sets: this marker, the move, then the script's result.
_INDEX_MOVE = "actionq:index-move"
# How long a replica count read for ``replica_acks=None`` ("auto") is used.
_REPLICA_COUNT_TTL_SECONDS = 5.0
# Commands of actionq's pipelines that write nothing (no WAIT after them).
_READS = frozenset(
    {
        *("GET", "EXISTS", "HGET", "HGETALL", "HMGET", "LLEN", "LRANGE", "SMEMBERS"),
        *("ZCARD", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE"),
        *("ZREVRANK", "ZSCORE", "XRANGE", "XREVRANGE"),
    }
)
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)


def _constants(keys: Keys, index_in_script: bool) -> str:
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
        f"local STATUS_REVISIONS = {long_string(keys.status_revisions())}\n"
        f"local STATUSES = {{{statuses}}}\n"
        f"local INDEX_IN_SCRIPT = {'true' if index_in_script else 'false'}\n"
    )


def _returning_the_move(body: str) -> str:
    """``body`` as a function whose result goes back with the script's
    per-status index move, if it made one (Cluster: the caller applies it)."""
    return (
        f"local function actionq_script()\n{body}\nend\n"
        "local result = actionq_script()\n"
        "if INDEX_MOVE then\n"
        f"  return {{'{_INDEX_MOVE}', INDEX_MOVE[1], INDEX_MOVE[2], INDEX_MOVE[3], result}}\n"
        "end\n"
        "return result\n"
    )


def _load_scripts(client: redis.Redis | RedisCluster, keys: Keys) -> dict[str, Script]:
    """Every script of the ``lua`` folder, by file name (a listing here once
    missed a new script: the folder is the list). ``_lib.lua`` is the shared
    prelude of each, not a script."""
    index_in_script = not isinstance(client, RedisCluster)
    lua = resources.files("actionq.store") / "lua"
    lib = _constants(keys, index_in_script) + (lua / "_lib.lua").read_text()
    scripts = {}
    for file in lua.iterdir():
        if not file.name.endswith(".lua") or file.name.startswith("_"):
            continue
        body = file.read_text()
        if not index_in_script:
            body = _returning_the_move(body)
        scripts[file.name.removesuffix(".lua")] = Script(client, lib + "\n" + body)
    return scripts


# A node that refuses connections (it died; its replica is being promoted)
# is tried again after 0.2, 0.4, ... s: about 4 s in all.
_NODE_ATTEMPTS = 7
_NODE_RETRY_PAUSE_SECONDS = 0.2


def _refused(error: BaseException) -> bool:
    """A connection that could not be made: nothing was sent on it."""
    cause = error.__cause__
    return isinstance(cause, redis.ConnectionError) and "Connection refused" in str(cause)


def _first_key(args: Sequence[Any]) -> str:
    """The key a queued command routes by (EVALSHA sha numkeys key...)."""
    return str(args[3] if str(args[0]).upper() == "EVALSHA" else args[1])


class RedisStore:
    """A Redis client with actionq's scripts; see ``ActionStore``.

    ``client`` is one Redis (or Sentinel's primary) or a ``RedisCluster``.
    ``replica_acks``: each write step waits (``WAIT``) until this many
    replicas have it, at most ``replica_ack_timeout_ms``; None: one where
    the primary has a replica (docs/reliability.md, "Replica acks").
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        keys: Keys | None = None,
        broker: BrokerList | None = None,
        *,
        replica_acks: int | None = 0,
        replica_ack_timeout_ms: int = 1000,
    ) -> None:
        self.redis: Any = client
        self.keys = keys or Keys()
        self.cluster = isinstance(client, RedisCluster)
        if self.cluster and broker is not None:
            raise ValueError("direct enqueue needs the broker on the store's Redis, not a Cluster")
        # Set: transitions push Celery messages themselves (app/messaging/direct_enqueue.py).
        self.broker = broker
        self.replica_acks = replica_acks
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self._replica_counts: dict[str, tuple[float, int]] = {}
        self._scripts = _load_scripts(client, self.keys)
        self._local = threading.local()
        # Builds pipelines for the Cluster path to sort by node; never connects.
        self._recorder = redis.Redis(decode_responses=True)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "actionq",
        broker: BrokerList | None = None,
        *,
        replica_acks: int | None = 0,
        replica_ack_timeout_ms: int = 1000,
    ) -> Self:
        client = sync_client(url, health_check_interval=30)
        return cls(
            client,
            Keys(prefix),
            broker,
            replica_acks=replica_acks,
            replica_ack_timeout_ms=replica_ack_timeout_ms,
        )

    @classmethod
    def from_settings(cls, settings: Settings, broker: BrokerList | None = None) -> Self:
        """The store ``settings`` name, with their replica acks."""
        return cls.from_url(
            settings.redis_url,
            settings.key_prefix,
            broker,
            replica_acks=settings.replica_acks,
            replica_ack_timeout_ms=settings.replica_ack_timeout_ms,
        )

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run a Redis call; redis-py's replies are loosely typed, so callers
        convert what they read explicitly."""
        try:
            return fn()
        except _UNAVAILABLE as e:
            raise StoreUnavailableError(f"Redis state store unavailable: {e}") from e

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._pipelined(lambda pipe: self.evalsha_in(pipe, name, keys, args))[0]

    def _pipelined(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run the commands ``build`` queues in one round trip (under
        Cluster: one per run of commands on the same node, in order), then
        wait for replicas (``replica_acks``) where they wrote.

        Scripts go in by EVALSHA (``evalsha_in``): redis-py's own pipelined
        scripts send a SCRIPT EXISTS first, one more round trip on every call.
        If the server has lost the scripts (it restarted, or a replica took
        over), they are loaded and the commands run again; callers only
        queue commands that are safe to repeat.
        """
        pipe = self._thread_pipeline("")
        try:
            build(pipe)
            commands = list(pipe.command_stack)
        finally:
            pipe.reset()
        if self.cluster:
            replies = self._run_on_nodes(commands)
        else:
            replies = self._run_on(self.redis, "", commands)
        return self._apply_moves(replies)

    def _thread_pipeline(self, node: str) -> Pipeline:
        """This thread's pipeline to the node named ``node`` (``""``: the one
        server; under Cluster, a builder that never sends). Reused: creating
        one copies redis-py's table of ~170 response callbacks, ~0.15 ms,
        more than the round trip."""
        pipes: dict[str, Pipeline] | None = getattr(self._local, "pipelines", None)
        if pipes is None:
            pipes = self._local.pipelines = {}
        pipe = pipes.get(node)
        if pipe is None:
            if node:
                client = self.redis.get_redis_connection(self.redis.get_node(node_name=node))
            else:
                client = self._recorder if self.cluster else self.redis
            pipe = pipes[node] = client.pipeline(transaction=False)
        return pipe

    def _run_on(
        self, client: redis.Redis, node: str, commands: list[tuple[Any, dict[str, Any]]]
    ) -> list[Any]:
        """``commands`` in one pipeline to one server, then WAIT on the same
        connection if they wrote (WAIT counts the writes of the connection
        that sends it)."""
        acks = 0
        if any(str(args[0]).upper() not in _READS for args, _ in commands):
            acks = self._acks_wanted(client, node)
        pipe = self._thread_pipeline(node)
        for attempt in (1, 2):
            pipe.command_stack = list(commands)
            if acks:
                pipe.command_stack.append((("WAIT", acks, self.replica_ack_timeout_ms), {}))
            try:
                replies = list(self._call(pipe.execute))
            except NoScriptError:
                if attempt == 2:
                    raise
                self._load_scripts_into(client)
                continue
            finally:
                pipe.reset()
            if acks:
                self._check_acks(int(replies.pop()), acks, node)
            return replies
        raise AssertionError("unreachable")

    def _run_on_nodes(self, commands: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
        """Cluster: each run of consecutive commands on one node as one
        pipeline there, in order. A node that answers MOVED (its slots moved:
        a replica took over) ran nothing of the run: the slot map is read
        again and the run goes where its slots are now. A node that refuses
        connections (it died) is tried again, with the map read again, for
        about 4 s, long enough for its replica to take over; any other
        failure is StoreUnavailableError, as on one Redis."""
        replies: list[Any] = []
        index = 0
        while index < len(commands):
            node = self._node_for(_first_key(commands[index][0]))
            end = index + 1
            while end < len(commands) and self._node_for(_first_key(commands[end][0])) == node:
                end += 1
            run = commands[index:end]
            for attempt in range(1, _NODE_ATTEMPTS + 1):
                try:
                    client = self.redis.get_redis_connection(node)
                    replies += self._run_on(client, node.name, run)
                    break
                except MovedError as e:
                    if attempt == _NODE_ATTEMPTS:
                        raise StoreUnavailableError(f"Redis Cluster slots keep moving: {e}") from e
                except StoreUnavailableError as e:
                    # Refused: nothing was sent, so the run may go again once
                    # the slot map names the node that took over (a replica
                    # is promoted within the cluster's node timeout). Any
                    # other failure may have run it: the caller decides.
                    if not _refused(e) or attempt == _NODE_ATTEMPTS:
                        self._refresh_slots()
                        raise
                    time.sleep(_NODE_RETRY_PAUSE_SECONDS * attempt)
                self._refresh_slots()
                node = self._node_for(_first_key(run[0][0]))
            index = end
        return replies

    def _node_for(self, key: str) -> Any:
        return self._call(lambda: self.redis.get_node_from_key(key))

    def _refresh_slots(self) -> None:
        try:
            self.redis.nodes_manager.initialize()
        except _UNAVAILABLE as e:
            log.warning("could not read the Redis Cluster's slot map: %s", e)

    def _acks_wanted(self, client: redis.Redis, node: str) -> int:
        if self.replica_acks is not None:
            return self.replica_acks
        now = time.monotonic()
        cached = self._replica_counts.get(node)
        if cached is None or cached[0] < now:
            info = self._call(lambda: client.info("replication"))
            count = int(info.get("connected_slaves", 0))
            cached = (now + _REPLICA_COUNT_TTL_SECONDS, count)
            self._replica_counts[node] = cached
        return min(1, cached[1])

    def _check_acks(self, acked: int, wanted: int, node: str) -> None:
        if acked < wanted:
            # The write stands on the primary; only a failover before the
            # replicas catch up could lose it (docs/reliability.md).
            log.warning(
                "only %d of %d replicas acknowledged a write to the store%s within %d ms",
                acked,
                wanted,
                f" (node {node})" if node else "",
                self.replica_ack_timeout_ms,
            )

    def _apply_moves(self, replies: list[Any]) -> list[Any]:
        """Under Cluster, apply the per-status index moves that scripts
        returned (one step on the index's slot) and give back their results."""
        moves: list[Any] = []
        for i, reply in enumerate(replies):
            if isinstance(reply, list) and reply and reply[0] == _INDEX_MOVE:
                moves += reply[1:4]
                replies[i] = reply[4] if len(reply) > 4 else None
        if moves:
            self.apply_status_moves(moves)
        return replies

    def apply_status_moves(self, moves: Sequence[Any]) -> int:
        """Apply (conversation id, revision, status or '') triples to the
        per-status index; older revisions than it holds are ignored."""
        k = self.keys
        keys = [k.conversation_index(), k.status_revisions()]
        keys += [k.status_index(status.value) for status in ConversationStatus]
        return int(self._script("apply_status_moves", keys, list(moves)))

    def _load_scripts_into(self, client: redis.Redis) -> None:
        for script in self._scripts.values():
            self._call(partial(client.script_load, script.script))

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
