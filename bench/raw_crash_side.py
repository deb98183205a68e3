"""Raw Celery in actionq's crash situations (``bench/raw_crash.py``, real prefork
workers, real SIGKILLs), for the ``crash`` section of ``python -m bench``.

- ``measure_child_kills``: actionq's flags (``acks_late``,
  ``task_reject_on_worker_lost=False``), Redis result backend. The task body
  appends the time to a file and SIGKILLs its pool child; measured: seconds
  from that time until the client, polling the result's state every 5 ms,
  sees it final (``FAILURE``, ``WorkerLostError``).
- ``measure_poison_loop``: the same with ``task_reject_on_worker_lost=True``;
  one such task, counted: how many times its body runs within a window, and
  whether its result ever becomes final.
- ``measure_worker_kills``: the whole worker is SIGKILLed (its process group)
  while the body sleeps, and a new worker is started at once; measured:
  seconds from the kill until the body runs again (the broker redelivers the
  message once its ``visibility_timeout`` has passed), and how many times it ran.

Each measurement uses its own database on the Stack's server (its own queue,
``unacked`` hash and results), and flushes it when done.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult
from celery.states import READY_STATES

from bench import raw_crash
from bench.harness import Stack, summary, wait_for

__all__ = [
    "MAX_WORKER_KILL_ROUNDS",
    "measure_child_kills",
    "measure_poison_loop",
    "measure_worker_kills",
]

# Each round waits out a visibility timeout (plus up to one restore interval).
MAX_WORKER_KILL_ROUNDS = 3
CHILD_DB, POISON_DB, WORKER_DB = 1, 2, 3


def _db_url(url: str, db: int) -> str:
    """The Stack's URL (``redis://:pw@host:port/0``) with another database."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


def _lines(path: Path) -> list[float]:
    """The times the task body wrote, one line per run."""
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def _ran(path: Path, times: int) -> bool:
    return len(_lines(path)) >= times


def _is_final(result: AsyncResult) -> bool:
    """One GET of the result in the backend: SUCCESS, FAILURE or REVOKED yet?"""
    return result.state in READY_STATES


def _flush(url: str) -> None:
    """Drop the database: the queue, kombu's ``unacked`` hash, the results."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


class _Raw:
    """A client app plus the environment its workers need."""

    def __init__(
        self,
        stack: Stack,
        db: int,
        reject_on_worker_lost: bool = False,
        visibility_timeout: int = raw_crash.DEFAULT_VISIBILITY_TIMEOUT,
    ) -> None:
        self.stack = stack
        self.url = _db_url(stack.url, db)
        self.client: Celery = raw_crash.make_app(
            self.url, reject_on_worker_lost, visibility_timeout
        )
        conf = raw_crash.crash_config(self.url, reject_on_worker_lost, visibility_timeout)
        transport = conf["broker_transport_options"]
        self.env = {
            raw_crash.URL_VARIABLE: self.url,
            raw_crash.REJECT_VARIABLE: "1" if reject_on_worker_lost else "0",
            raw_crash.VISIBILITY_VARIABLE: str(visibility_timeout),
        }
        self.config = {
            "task_acks_late": conf["task_acks_late"],
            "task_reject_on_worker_lost": conf["task_reject_on_worker_lost"],
            "worker_prefetch_multiplier": conf["worker_prefetch_multiplier"],
            "visibility_timeout_s": transport["visibility_timeout"],
            "unacked_restore_interval_s": transport["unacked_restore_interval"],
            "unacked_restore_throttle": transport["unacked_restore_throttle"],
            "result_backend": "redis (same server)",
            "pool": "prefork, --concurrency 1",
        }

    def worker(self, name: str, wait: bool = True) -> subprocess.Popen[bytes]:
        process = self.stack.spawn(raw_crash.worker_command(name), name, **self.env)
        if wait:  # a no-op's result comes back once the worker consumes
            self.client.tasks[raw_crash.NOOP_TASK].apply_async().get(timeout=60)
        return process

    def send(self, task: str, *args: object) -> AsyncResult:
        return self.client.tasks[task].apply_async(args=list(args))

    def close(self) -> None:
        self.client.close()
        _flush(self.url)


def _stored_time(result: AsyncResult) -> float | None:
    """The backend's ``date_done`` of a final result, as a Unix time."""
    done = result.backend.get_task_meta(result.id).get("date_done")
    if isinstance(done, datetime):
        return done.timestamp()
    return datetime.fromisoformat(done).timestamp() if isinstance(done, str) else None


def measure_child_kills(
    stack: Stack, rounds: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Raw Celery, actionq's flags: the body SIGKILLs its pool child; seconds from
    the kill until the client sees the result final."""
    raw = _Raw(stack, CHILD_DB)
    seen: list[float] = []
    stored: list[float] = []
    outcomes: Counter[str] = Counter()
    files = [stack.base / f"raw-child-{i}.runs" for i in range(rounds)]
    try:
        worker = raw.worker("raw-child-kill")
        for path in files:
            result = raw.send(raw_crash.APPEND_AND_DIE_TASK, str(path))
            wait_for(partial(_is_final, result), 60, "the raw task's result")
            seen_at = time.time()
            killed_at = _lines(path)[0]
            seen.append(seen_at - killed_at)
            stored_at = _stored_time(result)
            if stored_at is not None:
                stored.append(stored_at - killed_at)
            outcomes[f"{result.state} ({type(result.result).__name__})"] += 1
            time.sleep(0.3)  # as actionq's rounds: let the pool replace its child
        stack.kill_group(worker)
    finally:
        raw.close()
    runs = [len(_lines(path)) for path in files]
    log(f"  raw Celery, pool child SIGKILL: {rounds} rounds, median {statistics.median(seen):.3f}s")
    return {
        "config": raw.config,
        "seconds": summary(seen),
        "stored_seconds": summary(stored) if stored else None,
        "body_runs": runs,
        "outcomes": dict(outcomes),
        "raw": {"seconds": seen, "stored_seconds": stored},
    }


def measure_poison_loop(
    stack: Stack, window_s: float, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Raw Celery with ``task_reject_on_worker_lost=True``: one task whose body
    SIGKILLs its pool child; how often it runs in ``window_s`` seconds from its
    first run, and whether its result ever becomes final."""
    raw = _Raw(stack, POISON_DB, reject_on_worker_lost=True)
    path = stack.base / "raw-poison.runs"
    states: Counter[str] = Counter()
    final_after: float | None = None
    try:
        worker = raw.worker("raw-poison")
        result = raw.send(raw_crash.APPEND_AND_DIE_TASK, str(path))
        wait_for(partial(_ran, path, 1), 60, "the poison task's first run")
        first = _lines(path)[0]
        while time.time() < first + window_s:
            state = result.state
            states[state] += 1
            if final_after is None and state in READY_STATES:
                final_after = time.time() - first
            time.sleep(0.05)
        in_window = [t - first for t in _lines(path) if t < first + window_s]
        stopping = time.monotonic()
        stack.stop(worker, timeout=10)  # warm shutdown; SIGKILL of its group if it hangs
        stop_s = time.monotonic() - stopping
        runs_by_stop = len(_lines(path))
        final_state = result.state
    finally:
        raw.close()  # purges the queue (the message is back in it or in ``unacked``)
    gaps = [b - a for a, b in itertools.pairwise(in_window)]
    log(
        f"  raw Celery, reject_on_worker_lost=True: {len(in_window)} runs in {window_s:.0f}s, "
        f"final: {final_after is not None}"
    )
    return {
        "config": raw.config,
        "window_s": window_s,
        "body_runs_in_window": len(in_window),
        "body_runs_until_stopped": runs_by_stop,
        "run_times_s": in_window,
        "gaps_s": gaps,
        "final_state_seen": final_after is not None,
        "final_after_s": final_after,
        "states_seen": dict(states),
        "state_when_stopped": final_state,
        "worker_stop_s": stop_s,
        "worker_exit_code": worker.returncode,
    }


def measure_worker_kills(
    stack: Stack, rounds: int, visibility_timeout: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Raw Celery, actionq's flags but a short ``visibility_timeout``: SIGKILL the
    whole worker while the body sleeps, start a new worker at once; seconds from
    the kill until the body runs again, and how many times it ran."""
    rounds = min(rounds, MAX_WORKER_KILL_ROUNDS)
    raw = _Raw(stack, WORKER_DB, visibility_timeout=visibility_timeout)
    bound = visibility_timeout + 30.0
    settle = 2.0  # after the redelivery, watch a little longer for another run
    redelivered: list[float] = []
    since_delivery: list[float] = []
    runs: list[int] = []
    missed = 0
    try:
        for i in range(rounds):
            _flush(raw.url)
            path = stack.base / f"raw-node-{i}.runs"
            first = raw.worker(f"raw-node-{i}")
            raw.send(raw_crash.APPEND_AND_SLEEP_TASK, str(path), 600)
            wait_for(partial(_ran, path, 1), 60, "the raw task to start")
            killed_at = time.time()
            stack.kill_group(first)
            second = raw.worker(f"raw-node-{i}-after", wait=False)
            try:
                wait_for(partial(_ran, path, 2), bound, "the redelivery", 0.05)
            except TimeoutError:
                missed += 1
                log(f"  raw Celery worker kill {i + 1}/{rounds}: not redelivered in {bound:.0f}s")
            else:
                time.sleep(settle)
                times = _lines(path)
                redelivered.append(times[1] - killed_at)
                since_delivery.append(times[1] - times[0])
                log(
                    f"  raw Celery worker kill {i + 1}/{rounds}: body ran again "
                    f"{redelivered[-1]:.2f}s after the kill",
                )
            runs.append(len(_lines(path)))
            stack.kill_group(second)  # its child sleeps in the redelivered body
    finally:
        raw.close()
    return {
        "config": raw.config,
        "rounds": rounds,
        "bound_s": bound,
        "redelivered_s": summary(redelivered) if redelivered else None,
        "since_first_delivery_s": summary(since_delivery) if since_delivery else None,
        "not_redelivered": missed,
        "body_runs": runs,
        "raw": {"redelivered_s": redelivered, "since_first_delivery_s": since_delivery},
    }
