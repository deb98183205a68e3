"""Starting actionq's own processes (workers) as subprocesses."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["die_with_parent_hook", "stop_pidfile_process", "worker_command"]

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


def stop_pidfile_process(
    pidfile: Path, names: tuple[str, ...], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> bool:
    """Send ``sig`` to the process in ``pidfile`` if it is still running one of
    ``names``; SIGKILL it if it has not exited after ``timeout``."""
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
    except (OSError, ValueError):
        return False
    if not any(name in cmdline for name in names):
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(f"/proc/{pid}"):
        os.kill(pid, signal.SIGKILL)
    return True


def worker_command(
    concurrency: int = 1, hostname: str | None = None, loglevel: str = "INFO"
) -> list[str]:
    """The ``celery worker`` command line actionq runs: prefork pool, one
    message prefetched per process, no gossip or mingle (not needed: leases
    in Redis say who is alive)."""
    command = [
        sys.executable, "-m", "celery", "-A", "app", "worker",
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle",
        "--loglevel", loglevel,
    ]  # fmt: skip
    if hostname:
        command += ["--hostname", hostname]
    return command
