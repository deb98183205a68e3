"""Processes for benchmarks: an embedded server, workers, a sweeper."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from actionq.local.embedded import EmbeddedServer
from actionq.local.processes import stop_process, worker_command

ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def rate_summary(rates: Sequence[float]) -> dict[str, float]:
    """Throughput over rounds: min/median/max (percentiles mean little for 3-5 rounds)."""
    return {
        "rounds": len(rates),
        "min": min(rates),
        "median": statistics.median(rates),
        "max": max(rates),
    }


class Stack:
    """An embedded server plus any number of worker processes; with
    ``redis_url``, the workers of a store started elsewhere (``bench.topology``)."""

    def __init__(
        self,
        base: Path | None = None,
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="actionq-bench-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.server: EmbeddedServer | None = None
        if redis_url is None:
            self.server = EmbeddedServer(self.base / "data")
            redis_url = self.server.start()
        self.url: str = redis_url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        self.env |= {
            "ACTIONQ_REDIS_URL": self.url,
            "ACTIONQ_TOOL_MODULES": "bench.tools",
            "ACTIONQ_WORKDIR": str(self.base),
            "PYTHONPATH": str(ROOT),
        } | (env or {})
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, command: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.base / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env | env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def worker(
        self, name: str, concurrency: int = 1, *, agent: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        """A tool worker (prefork), or with ``agent`` an agent-step worker (threads)."""
        command = worker_command(concurrency, f"{name}@%h", "WARNING", agent=agent)
        return self.spawn(command, name, **env)

    def sweeper(self) -> subprocess.Popen[bytes]:
        return self.spawn([sys.executable, "-m", "actionq", "sweeper"], "sweeper")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
        """Warm shutdown (SIGTERM) of one process; SIGKILL of its group if it hangs."""
        stop_process(process, timeout, kill_group=True, kill_timeout=10)

    @staticmethod
    def kill_group(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker's whole process group (main process and pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_group(process)
        if self.server is not None:
            self.server.stop()
