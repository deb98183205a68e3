"""What one throughput round measured, shared by every side."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from bench.harness import rate_summary, wait_for

__all__ = ["Round", "counted_round", "throughput_result"]


@dataclass(frozen=True)
class Round:
    """``n`` tasks: the client sent them all in ``submit_s`` and saw the last
    one done ``total_s`` after it sent the first."""

    n: int
    submit_s: float
    total_s: float

    @property
    def rate(self) -> float:
        return self.n / self.total_s


def counted_round(
    client: redis.Redis, send: Callable[[str], None], n: int, timeout: float | None = None
) -> Round:
    """Fire-and-forget: ``send(key)`` n times; each task INCRs ``key`` in its
    body, and the round ends when the client sees the counter reach n."""
    key = f"bench:done:{uuid.uuid4().hex}"
    start = time.perf_counter()
    for _ in range(n):
        send(key)
    submitted = time.perf_counter()
    wait_for(
        lambda: int(client.get(key) or 0) >= n,
        timeout or max(60.0, n / 10),
        f"{n} counted tasks",
    )
    end = time.perf_counter()
    client.delete(key)
    return Round(n, submitted - start, end - start)


def throughput_result(rounds: list[Round]) -> dict[str, Any]:
    """JSON for one side: tasks/s over rounds, plus the raw rounds."""
    return {
        "tasks_per_s": rate_summary([r.rate for r in rounds]),
        "submit_per_s": rate_summary([r.n / r.submit_s for r in rounds]),
        "rounds": [asdict(r) | {"rate": r.rate} for r in rounds],
    }
