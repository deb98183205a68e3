"""Starting actionq's own processes (workers) as subprocesses."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from actionq.local.data_folder import process_start_time, read_pidfile

__all__ = [
    "child_preexec",
    "die_with_parent_hook",
    "stop_pidfile_process",
    "worker_command",
]

_PR_SET_PDEATHSIG = 1


def die_with_parent_hook(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its
    parent dies (Linux), so a killed supervisor leaves nothing running."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return hook


def child_preexec(die_with_parent: bool = False, sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: files the child creates are its owner's alone (umask
    077), and with ``die_with_parent`` it gets ``sig`` when its parent dies."""
    death_hook = die_with_parent_hook(sig) if die_with_parent else None

    def hook() -> None:
        os.umask(0o077)
        if death_hook is not None:
            death_hook()

    return hook


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
    concurrency: int = 1, hostname: str | None = None, loglevel: str = "INFO"
) -> list[str]:
    """The ``celery worker`` command line actionq runs: prefork pool, one
    message prefetched per process, no gossip or mingle (not needed: leases
    in Redis say who is alive)."""
    command = [
        sys.executable, "-m", "celery", "-A", "actionq", "worker",
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle",
        "--loglevel", loglevel,
    ]  # fmt: skip
    if hostname:
        command += ["--hostname", hostname]
    return command
