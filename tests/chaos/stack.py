"""The real stack under chaos: an embedded server with AOF, workers, a
sweeper and the HTTP API, each of which can be killed and started again."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from actionq.local.embedded import EmbeddedServer
from actionq.local.processes import free_port, stop_process
from tests.helpers import ROOT, WorkerProcess


class ChaosStack:
    def __init__(self, base: Path, workers: int = 3, concurrency: int = 2) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.server = EmbeddedServer(base / "redis", port=free_port())
        self.api_key = secrets.token_urlsafe(16)
        self.api_port = free_port()
        self.side_effects = base / "side-effects.log"
        self.worker_count = workers
        self.concurrency = concurrency
        self.workers: list[WorkerProcess] = []
        # Workers a fault told to shut down: alive a while yet, but on their way out.
        self.retiring: list[WorkerProcess] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.sweeper: subprocess.Popen[bytes] | None = None
        self._names = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        return base | {
            "PYTHONPATH": str(ROOT),
            "ACTIONQ_REDIS_URL": self.server.url,
            "ACTIONQ_API_KEYS": self.api_key,
            "ACTIONQ_TOOL_MODULES": "tests.chaos.tools",
            "ACTIONQ_WORKDIR": str(self.base),
            "ACTIONQ_VISIBILITY_TIMEOUT": "10",
            "ACTIONQ_UNACKED_RESTORE_INTERVAL": "2",
        }

    # --- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self.server.start()
        for _ in range(self.worker_count):
            self.add_worker(wait=True)
        self.start_sweeper()
        self.start_api()

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.base / log_name).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "actionq", *args], cwd=ROOT, env=self.env(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def add_worker(self, wait: bool = False) -> WorkerProcess:
        self._names += 1
        worker = WorkerProcess(f"chaos{self._names}", self.env(), self.base, self.concurrency)
        worker.start()
        self.workers.append(worker)
        if wait:
            worker.wait_ready(60)
        return worker

    def ensure_workers(self) -> None:
        """Start workers until as many are alive as the stack should have."""
        for _ in range(self.worker_count - len(self.live_workers())):
            self.add_worker()

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.is_alive()]

    def serving_workers(self) -> list[WorkerProcess]:
        """Alive and not told to stop (a warm shutdown may take a while)."""
        return [w for w in self.live_workers() if not any(w is r for r in self.retiring)]

    def retire(self, worker: WorkerProcess, sig: int) -> None:
        """Tell ``worker`` to stop (SIGTERM: warm, SIGQUIT: cold)."""
        self.retiring.append(worker)
        os.kill(worker.pid, sig)

    def start_sweeper(self) -> None:
        self.sweeper = self._spawn(["sweeper"], "sweeper.log")

    def start_api(self, wait: bool = True) -> None:
        self.api = self._spawn(["api", "--port", str(self.api_port)], "api.log")
        if wait:
            self.wait_api()

    def wait_api(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.api_url + "/health", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the API did not come up")

    def restart_server(self, down_for: float) -> None:
        assert self.server.process is not None
        self.server.process.kill()
        self.server.process.wait(10)
        time.sleep(down_for)
        self.server.start()

    def restart_api(self) -> None:
        if self.api is not None:
            self.api.kill()
            self.api.wait(10)
        self.start_api(wait=False)

    def stop(self) -> None:
        for process in (self.api, self.sweeper):
            if process is not None:
                stop_process(process, 10, kill_group=True, kill_timeout=10)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop(timeout=15)
        for worker in self.workers:
            if worker.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
        self.server.stop()
