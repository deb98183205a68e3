"""Starting actionq's own processes (workers) as subprocesses."""

from __future__ import annotations

import sys

__all__ = ["worker_command"]


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
