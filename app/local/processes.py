"""Starting and stopping actionq's own processes (server, workers) as
subprocesses; the tests and benchmarks use the same helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actionq.local.data_folder import process_start_time, read_pidfile
from actionq.settings import Settings
from actionq.tools.sandbox import die_with_parent_hook

__all__ = [
    "child_preexec",
    "free_port",
    "stop_pidfile_process",
    "stop_process",
    "worker_command",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_preexec(die_with_parent: bool = False, sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: files the child creates are its owner's alone (umask
    077), and with ``die_with_parent`` it gets ``sig`` when its parent dies
    (so a killed supervisor leaves nothing running)."""
    death_hook = die_with_parent_hook(sig) if die_with_parent else None

    def hook() -> None:
        os.umask(0o077)
        if death_hook is not None:
            death_hook()

    return hook


def stop_process(
    process: subprocess.Popen[Any],
    timeout: float,
    sig: int = signal.SIGTERM,
    *,
    kill_group: bool = False,
    kill_timeout: float | None = None,
) -> int:
    """Send ``sig`` to ``process`` if it still runs and give it ``timeout``
    seconds to exit; then SIGKILL it, or with ``kill_group`` its whole process
    group (a child started in its own session, with children of its own), and
    wait ``kill_timeout`` (None: until it is gone; SIGKILL cannot be caught).
    Returns its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if kill_group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
    return process.wait(kill_timeout)


def stop_pidfile_process(pidfile: Path, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Send ``sig`` to the process ``pidfile`` recorded, if that very process
    (same pid *and* start time) still runs; SIGKILL it if it has not exited
    after ``timeout``. A pid reused by an unrelated process is left alone,
    whatever its name. The pidfile is removed either way."""
    pid = read_pidfile(pidfile)
    pidfile.unlink(missing_ok=True)
    if pid is None:
        return False
    started = process_start_time(pid)
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while process_start_time(pid) == started and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_start_time(pid) == started:
        os.kill(pid, signal.SIGKILL)
    return True


def worker_command(
    concurrency: int = 1,
    hostname: str | None = None,
    loglevel: str = "INFO",
    *,
    agent: bool = False,
    queue: str | None = None,
) -> list[str]:
    """The ``celery worker`` command line actionq runs. Tool calls: the prefork
    pool (a crash hits one process), one message prefetched per process,
    serving ``queue`` (None: the worker's ``ACTIONQ_QUEUE``). Agent steps
    (``agent``): a thread pool, since a step mostly waits on the model,
    serving ``queue`` (None: the default agent queue). No gossip or mingle:
    leases in Redis say who is alive."""
    if agent and queue is None:
        queue = str(Settings.model_fields["agent_queue"].default)
    command = [
        sys.executable, "-m", "celery", "-A", "actionq", "worker",
        "--pool", "threads" if agent else "prefork",
        "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle",
        "--loglevel", loglevel,
    ]  # fmt: skip
    if queue is not None:
        command += ["--queues", queue]
    if hostname:
        command += ["--hostname", hostname]
    return command
