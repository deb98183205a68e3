"""Clients of the store, from its URL (``actionq.store_url`` says what a URL
means). Only this module turns a URL into a client."""

# redis-py's cluster and sentinel classes are partly untyped.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from actionq.store_url import StoreAddress, parse_store_url

__all__ = ["async_client", "sync_client"]


def _credentials(address: StoreAddress) -> dict[str, Any]:
    found = {"username": address.username, "password": address.password}
    return {k: v for k, v in found.items() if v is not None}


@dataclass(frozen=True)
class _Classes:
    """redis-py's classes of one kind, blocking or asyncio."""

    redis: Any
    cluster: Any
    node: Any
    sentinel: Any


_SYNC = _Classes(redis.Redis, RedisCluster, ClusterNode, Sentinel)
_ASYNC = _Classes(aioredis.Redis, AsyncRedisCluster, AsyncClusterNode, AsyncSentinel)


def _client(url: str, classes: _Classes, options: dict[str, Any]) -> Any:
    address = parse_store_url(url)
    options = {"decode_responses": True} | options
    if address.topology == "cluster":
        nodes = [classes.node(host, port) for host, port in address.hosts]
        return classes.cluster(startup_nodes=nodes, **_credentials(address), **options)
    if address.topology == "sentinel":
        sentinel = classes.sentinel(
            list(address.hosts), socket_timeout=options.get("socket_timeout")
        )
        return sentinel.master_for(
            address.primary_name, db=address.db, **_credentials(address), **options
        )
    return classes.redis.from_url(url, **options)


def sync_client(url: str, **options: Any) -> redis.Redis | RedisCluster:
    """A client of the store at ``url`` (``options`` go to every connection)."""
    return cast(redis.Redis | RedisCluster, _client(url, _SYNC, options))


def async_client(url: str, **options: Any) -> aioredis.Redis | AsyncRedisCluster:
    """``sync_client`` for asyncio (the API's event streams)."""
    return cast(aioredis.Redis | AsyncRedisCluster, _client(url, _ASYNC, options))
