"""Dramatiq worker module for the peer comparison (``python -m dramatiq bench.peer_dramatiq``).

Dramatiq acks a message after the actor ran (late ack, like ``acks_late``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench_dramatiq"
ACTOR = "count"

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
dramatiq.set_broker(RedisBroker(url=URL))  # type: ignore[no-untyped-call]


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, max_retries=0)
def count(key: str) -> None:
    """Do nothing but count itself done (one INCR), like raw Celery's ``noop_counted``."""
    _client().incr(key)
