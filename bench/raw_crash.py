"""Plain Celery 5.7 tasks that crash, for the ``crash`` section: no actionq code here.

    BENCH_RAW_CRASH_URL=redis://.../1 python -m celery -A bench.raw_crash worker \\
        --pool prefork --concurrency 1 --without-gossip --without-mingle -Q bench_raw_crash

The configuration is ``bench.raw_celery.raw_config`` (actionq's own flags:
``acks_late``, ``task_reject_on_worker_lost=False``, prefetch multiplier 1,
the Redis result backend so a failure is visible) with two knobs a worker
reads from its environment:

- ``BENCH_RAW_CRASH_REJECT_ON_WORKER_LOST=1``: ``task_reject_on_worker_lost=True``,
  the naive "never lose a task" setting;
- ``BENCH_RAW_CRASH_VISIBILITY_TIMEOUT``: the Redis transport's
  ``visibility_timeout`` in seconds (default 3600, as actionq's).

Every task body appends one line to a file (``time.time()`` when the body
started), so the number of lines is the number of times the body ran.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, cast

from celery import Celery

from bench.raw_celery import raw_config

__all__ = [
    "APPEND_AND_DIE_TASK",
    "APPEND_AND_SLEEP_TASK",
    "NOOP_TASK",
    "QUEUE",
    "REJECT_VARIABLE",
    "URL_VARIABLE",
    "VISIBILITY_VARIABLE",
    "app",
    "crash_config",
    "make_app",
    "worker_command",
]

QUEUE = "bench_raw_crash"
NOOP_TASK = "bench.raw_crash.noop"
APPEND_AND_DIE_TASK = "bench.raw_crash.append_and_die"
APPEND_AND_SLEEP_TASK = "bench.raw_crash.append_and_sleep"
URL_VARIABLE = "BENCH_RAW_CRASH_URL"
REJECT_VARIABLE = "BENCH_RAW_CRASH_REJECT_ON_WORKER_LOST"
VISIBILITY_VARIABLE = "BENCH_RAW_CRASH_VISIBILITY_TIMEOUT"
DEFAULT_VISIBILITY_TIMEOUT = 3600


def crash_config(
    url: str,
    reject_on_worker_lost: bool = False,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
) -> dict[str, Any]:
    """``bench.raw_celery.raw_config`` on this module's queue, with the two knobs."""
    config = raw_config(url)
    transport = dict(cast(dict[str, Any], config["broker_transport_options"]))
    transport["visibility_timeout"] = visibility_timeout
    return config | {
        "task_default_queue": QUEUE,
        "task_reject_on_worker_lost": reject_on_worker_lost,
        "broker_transport_options": transport,
    }


def worker_command(hostname: str, concurrency: int = 1) -> list[str]:
    """actionq's worker flags (``app/local/processes.py``), on this module's queue."""
    return [
        sys.executable, "-m", "celery", "-A", "bench.raw_crash", "worker",
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle",
        "--hostname", f"{hostname}@%h",
        "-Q", QUEUE,
        "--loglevel", "WARNING",
    ]  # fmt: skip


def _append_line(path: str) -> None:
    with open(path, "a") as f:
        f.write(f"{time.time()!r}\n")


def make_app(
    url: str,
    reject_on_worker_lost: bool = False,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
) -> Celery:
    celery = Celery("bench_raw_crash")
    celery.conf.update(crash_config(url, reject_on_worker_lost, visibility_timeout))

    def noop() -> None:
        """Nothing: the client waits for its result to know the worker is up."""

    def append_and_die(path: str) -> None:
        """Append the time to ``path``, then SIGKILL the pool child running this."""
        _append_line(path)
        os.kill(os.getpid(), signal.SIGKILL)

    def append_and_sleep(path: str, seconds: float) -> None:
        """Append the time to ``path``, then sleep (the whole worker gets killed)."""
        _append_line(path)
        time.sleep(seconds)

    for fn, name in (
        (noop, NOOP_TASK),
        (append_and_die, APPEND_AND_DIE_TASK),
        (append_and_sleep, APPEND_AND_SLEEP_TASK),
    ):
        # shared=False: the client's app and the worker's app each keep their own.
        celery.task(fn, name=name, acks_late=True, shared=False)
    return celery


app = make_app(
    os.environ.get(URL_VARIABLE, "redis://127.0.0.1:6379/1"),
    reject_on_worker_lost=os.environ.get(REJECT_VARIABLE) == "1",
    visibility_timeout=int(os.environ.get(VISIBILITY_VARIABLE, DEFAULT_VISIBILITY_TIMEOUT)),
)
