"""Optional peers on the same server: Dramatiq and RQ, fire-and-forget, done
when a Redis counter (one INCR per task, as for raw Celery) reaches n.

Measured only if the packages are installed (``pip install dramatiq rq``);
otherwise reported as "not measured".
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from bench.harness import Stack
from bench.rounds import Round, counted_round

__all__ = ["PEERS", "CounterPeer", "not_installed", "start_peer"]

PEERS = ("dramatiq", "rq")
URL_VARIABLE = "BENCH_REDIS_URL"


def not_installed(peer: str) -> bool:
    return importlib.util.find_spec(peer) is None


class CounterPeer:
    """A running peer worker; ``send(key)`` enqueues one counting task."""

    def __init__(
        self, stack: Stack, name: str, command: list[str], send: Callable[[str], None]
    ) -> None:
        self.stack = stack
        self.send = send
        self.redis = redis.Redis.from_url(stack.url)
        self.worker = stack.spawn(command, name, **{URL_VARIABLE: stack.url})

    def close(self) -> None:
        self.stack.stop(self.worker)
        self.redis.close()

    def fire_and_forget(self, n: int, timeout: float | None = None) -> Round:
        return counted_round(self.redis, self.send, n, timeout)


def _dramatiq(stack: Stack, concurrency: int) -> CounterPeer:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from bench.peer_dramatiq import ACTOR, QUEUE

    broker = RedisBroker(url=stack.url)  # type: ignore[no-untyped-call]

    def send(key: str) -> None:
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=QUEUE, actor_name=ACTOR, args=(key,), kwargs={}, options={}
        )
        broker.enqueue(message)

    command = [
        sys.executable, "-m", "dramatiq", "bench.peer_dramatiq",
        "--processes", str(concurrency), "--threads", "1", "--queues", QUEUE,
    ]  # fmt: skip
    # Dramatiq's default prefetch (2 per thread). With 1, its polling consumer
    # backs off (up to 1 s) while a message is outstanding, which is unfair to it.
    return CounterPeer(stack, "dramatiq", command, send)


def _rq(stack: Stack, concurrency: int) -> CounterPeer:
    from rq import Queue

    from bench.peer_rq import QUEUE

    queue = Queue(QUEUE, connection=redis.Redis.from_url(stack.url))

    def send(key: str) -> None:
        queue.enqueue("bench.peer_rq.count", key, result_ttl=0)

    rq_cli = str(Path(sys.executable).parent / "rq")
    command = [rq_cli, "worker-pool", "--num-workers", str(concurrency), "--url", stack.url]
    command += ["--logging-level", "WARNING", QUEUE]
    return CounterPeer(stack, "rq", command, send)


def start_peer(peer: str, stack: Stack, concurrency: int) -> CounterPeer:
    """Start the peer's workers and warm them up (returns once they run tasks)."""
    started = {"dramatiq": _dramatiq, "rq": _rq}[peer](stack, concurrency)
    try:
        started.fire_and_forget(4 * concurrency, timeout=60)
    except BaseException:
        started.close()
        raise
    return started
