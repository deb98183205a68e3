"""Raw Celery's side: ``bench/raw_celery.py`` on the same server, same worker flags."""

from __future__ import annotations

import time

import redis

from bench import raw_celery
from bench.harness import Stack
from bench.rounds import Round, counted_round

__all__ = ["RawCelerySide"]


class RawCelerySide:
    """Start with a running raw Celery worker; ``close`` stops it (warm shutdown)."""

    def __init__(self, stack: Stack, concurrency: int) -> None:
        self.stack = stack
        self.client = raw_celery.make_app(stack.url)
        self.noop = self.client.tasks[raw_celery.NOOP_TASK]
        self.counted = self.client.tasks[raw_celery.COUNTED_TASK]
        self.redis = redis.Redis.from_url(stack.url)
        self.worker = stack.spawn(
            raw_celery.worker_command(concurrency),
            f"raw-celery-c{concurrency}",
            **{raw_celery.URL_VARIABLE: stack.url},
        )
        self.noop.apply_async().get(timeout=60)  # the worker is up
        self.with_results(4 * concurrency)  # warm-up: every child imports and connects
        self.fire_and_forget(4 * concurrency)

    def close(self) -> None:
        self.stack.stop(self.worker)
        self.client.close()
        self.redis.close()

    def latency(self) -> float:
        """Seconds from ``apply_async`` until ``result.get()`` returns."""
        start = time.perf_counter()
        self.noop.apply_async().get(timeout=30)
        return time.perf_counter() - start

    def with_results(self, n: int) -> Round:
        """Send ``n`` noop tasks, then ``get()`` every result (Redis result backend)."""
        start = time.perf_counter()
        results = [self.noop.apply_async() for _ in range(n)]
        submitted = time.perf_counter()
        timeout = max(60.0, n / 10)
        for result in results:
            result.get(timeout=timeout)
        return Round(n, submitted - start, time.perf_counter() - start)

    def fire_and_forget(self, n: int) -> Round:
        """Send ``n`` tasks with ``ignore_result``; done when their Redis counter reaches n."""
        return counted_round(self.redis, lambda key: self.counted.apply_async(args=[key]), n)
