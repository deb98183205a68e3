"""Plain Celery 5.7, for comparison: no actionq code is imported here.

    BENCH_REDIS_URL=redis://... python -m celery -A bench.raw_celery worker \\
        --pool prefork --concurrency 2 -E --without-gossip --without-mingle -Q bench_raw

The configuration mirrors actionq's own Celery configuration
(``app/messaging/celery_app.py``) wherever it applies: JSON only, ``acks_late``,
prefetch multiplier 1, task events on (worker and ``sent`` events), the same
Redis transport options. The one difference is the result backend: ``noop``
stores its result in Redis (the client waits for it), ``noop_counted`` stores
none and counts itself done in a Redis counter instead.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

import redis
from celery import Celery

__all__ = [
    "COUNTED_TASK",
    "NOOP_TASK",
    "QUEUE",
    "URL_VARIABLE",
    "app",
    "make_app",
    "raw_config",
    "worker_command",
]

QUEUE = "bench_raw"
NOOP_TASK = "bench.raw.noop"
COUNTED_TASK = "bench.raw.noop_counted"
URL_VARIABLE = "BENCH_REDIS_URL"


def raw_config(url: str) -> dict[str, object]:
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": 3600,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        },
    }


def worker_command(concurrency: int) -> list[str]:
    """The same worker flags as actionq's (``app/local/processes.py``), plus ``-E``."""
    return [
        sys.executable, "-m", "celery", "-A", "bench.raw_celery", "worker",
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle",
        "-E",
        "-Q", QUEUE,
        "--loglevel", "WARNING",
    ]  # fmt: skip


@lru_cache(maxsize=1)
def _counter_client() -> redis.Redis:
    """One connection per pool child (redis-py reconnects after a fork)."""
    return redis.Redis.from_url(os.environ[URL_VARIABLE])


def make_app(url: str) -> Celery:
    celery = Celery("bench_raw")
    celery.conf.update(raw_config(url))

    def noop() -> None:
        """Do nothing; the (empty) result goes to the Redis result backend."""

    def noop_counted(counter_key: str) -> None:
        """Do nothing but count itself done: one INCR, no result stored."""
        _counter_client().incr(counter_key)

    # shared=False: the client's app and the module's app each keep their own.
    celery.task(noop, name=NOOP_TASK, acks_late=True, shared=False)
    celery.task(noop_counted, name=COUNTED_TASK, acks_late=True, ignore_result=True, shared=False)

    return celery


app = make_app(os.environ.get(URL_VARIABLE, "redis://127.0.0.1:6379/0"))
