"""RQ job function for the peer comparison (``rq worker bench_rq``; a work
horse is forked per job, RQ's default). Imported by the RQ worker."""

from __future__ import annotations

import os
from functools import lru_cache

import redis

QUEUE = "bench_rq"


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


def count(key: str) -> None:
    """Do nothing but count itself done (one INCR), like raw Celery's ``noop_counted``."""
    _client().incr(key)
