"""Clients of the store, from its URL (``actionq.store_url`` says what a URL
means). Only this module turns a URL into a client."""

# redis-py's cluster and sentinel classes are partly untyped.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

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


def sync_client(url: str, **options: Any) -> redis.Redis | RedisCluster:
    """A client of the store at ``url`` (``options`` go to every connection)."""
    address = parse_store_url(url)
    options = {"decode_responses": True} | options
    if address.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in address.hosts]
        return RedisCluster(startup_nodes=nodes, **_credentials(address), **options)
    if address.topology == "sentinel":
        sentinel = Sentinel(list(address.hosts), socket_timeout=options.get("socket_timeout"))
        primary = sentinel.master_for(
            address.primary_name, db=address.db, **_credentials(address), **options
        )
        return cast(redis.Redis, primary)
    return redis.Redis.from_url(url, **options)


def async_client(url: str, **options: Any) -> aioredis.Redis | AsyncRedisCluster:
    """``sync_client`` for asyncio (the API's event streams)."""
    address = parse_store_url(url)
    options = {"decode_responses": True} | options
    if address.topology == "cluster":
        nodes = [AsyncClusterNode(host, port) for host, port in address.hosts]
        return AsyncRedisCluster(startup_nodes=nodes, **_credentials(address), **options)
    if address.topology == "sentinel":
        sentinel = AsyncSentinel(list(address.hosts), socket_timeout=options.get("socket_timeout"))
        primary = sentinel.master_for(
            address.primary_name, db=address.db, **_credentials(address), **options
        )
        return cast(aioredis.Redis, primary)
    return aioredis.Redis.from_url(url, **options)
