"""The real stack under chaos: a store (an embedded server with AOF, or a
3-primary valkey cluster with RabbitMQ as the broker), workers, a sweeper and
the HTTP API, each of which can be killed and started again."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol

import httpx
from kombu import Connection, Queue

from actionq.local.embedded import EmbeddedServer
from actionq.local.processes import free_port, stop_process
from actionq.settings import Settings
from actionq.store import ActionStore
from tests.helpers import ROOT, WorkerProcess
from tests.topology import ValkeyCluster
from tests.worker.test_rabbitmq import AMQP_URL

StoreKind = Literal["embedded", "cluster"]


class ChaosStore(Protocol):
    """Where the stack keeps its state, and the one fault it takes."""

    prefix: str

    @property
    def url(self) -> str: ...

    def env(self) -> dict[str, str]:
        """The ACTIONQ_* settings that point a process at this store."""
        ...

    def start(self) -> None: ...

    def fault(self, rng: random.Random, down_for: float) -> None:
        """Take (part of) the store away for about ``down_for`` seconds and
        bring it back; return once it is whole again."""
        ...

    def ensure_up(self) -> None:
        """Start again whatever of the store is not running."""
        ...

    def stop(self) -> None: ...


class EmbeddedStore:
    """One embedded valkey with AOF; its fault: SIGKILL, down a while, start again."""

    prefix = "actionq"

    def __init__(self, base: Path) -> None:
        self.server = EmbeddedServer(base / "redis", port=free_port())

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        return {"ACTIONQ_REDIS_URL": self.server.url}

    def start(self) -> None:
        self.server.start()

    def fault(self, rng: random.Random, down_for: float) -> None:
        assert self.server.process is not None
        self.server.process.kill()
        self.server.process.wait(10)
        time.sleep(down_for)
        self.server.start()

    def ensure_up(self) -> None:
        if self.server.process is None or self.server.process.poll() is not None:
            self.server.start()

    def stop(self) -> None:
        self.server.stop()


class ClusterStore:
    """A real 3-primary valkey cluster, a replica each (tests/topology.py),
    with RabbitMQ as the broker (kombu cannot use a Cluster), under a key
    prefix and queues of its own (the queues are deleted at the end). Its
    fault: SIGKILL the primary of a random slot, wait until its replica is
    promoted, then start the killed node again: it rejoins as the new
    primary's replica, so every primary has a replica for the next fault."""

    def __init__(self, base: Path) -> None:
        self.cluster = ValkeyCluster(base / "cluster", primaries=3, replicas=1)
        self.prefix = f"aq-chaos-{uuid.uuid4().hex[:10]}"
        self.queues = (self.prefix, f"{self.prefix}.agent")
        # Nodes are started with PR_SET_PDEATHSIG, which the kernel ties to the
        # *thread* that forked them: a node restarted by the fault injector's
        # thread would be SIGKILLed when that thread ends. They are all started
        # from this one thread instead, which lives as long as the stack.
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-nodes")

    @property
    def url(self) -> str:
        # Every node, not just the seed: a process started while one is down
        # still finds the cluster.
        nodes = ",".join(f"{host}:{port}" for host, port in self.cluster.startup_nodes)
        return f"redis+cluster://{nodes}"

    def env(self) -> dict[str, str]:
        return {
            "ACTIONQ_REDIS_URL": self.url,
            "ACTIONQ_KEY_PREFIX": self.prefix,
            "ACTIONQ_BROKER_URL": AMQP_URL,
            "ACTIONQ_QUEUE": self.queues[0],
            "ACTIONQ_AGENT_QUEUE": self.queues[1],
            # A failover takes ~2 s here: longer than that, a lease renewed
            # on the old primary would look lapsed (as in test_cluster.py).
            "ACTIONQ_WORKER_LEASE_SECONDS": "8",
        }

    def start(self) -> None:
        self._starter.submit(self.cluster.start).result()

    def fault(self, rng: random.Random, down_for: float) -> None:
        # A random key's slot: each primary is picked about as often as the
        # share of slots it serves.
        key = f"chaos-{rng.randrange(10**9)}"
        killed = self.cluster.primary_for(key)
        self.cluster.kill_primary_for(key)  # bounded: FAILOVER_TIMEOUT
        time.sleep(down_for)
        self._starter.submit(self.cluster.restart_node, killed).result()

    def ensure_up(self) -> None:
        for port, node in self.cluster.nodes.items():
            if not node.is_alive():
                self._starter.submit(self.cluster.restart_node, port).result()

    def stop(self) -> None:
        self.cluster.stop()
        self._starter.shutdown()
        with Connection(AMQP_URL) as conn:
            for queue in self.queues:
                with contextlib.suppress(Exception):
                    Queue(queue, channel=conn.channel()).delete()


def make_store(kind: StoreKind, base: Path) -> ChaosStore:
    return EmbeddedStore(base) if kind == "embedded" else ClusterStore(base)


class ChaosStack:
    def __init__(
        self, base: Path, workers: int = 3, concurrency: int = 2, store: StoreKind = "embedded"
    ) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.store_kind = store
        self.redis = make_store(store, base)
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
        return (
            base
            | {
                "PYTHONPATH": str(ROOT),
                "ACTIONQ_API_KEYS": self.api_key,
                "ACTIONQ_TOOL_MODULES": "tests.chaos.tools",
                "ACTIONQ_WORKDIR": str(self.base),
                "ACTIONQ_VISIBILITY_TIMEOUT": "10",
                "ACTIONQ_UNACKED_RESTORE_INTERVAL": "2",
            }
            | self.redis.env()
        )

    def settings(self) -> Settings:
        """The settings the stack's processes run with, for a client in this process."""
        fields = {
            k.removeprefix("ACTIONQ_").lower(): v
            for k, v in self.env().items()
            if k.startswith("ACTIONQ_")
        }
        return Settings(**fields)  # type: ignore[arg-type]

    def open_store(self) -> ActionStore:
        """A store client on the stack's store and key prefix (the caller closes it)."""
        return ActionStore.from_url(self.redis.url, self.redis.prefix)

    # --- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self.redis.start()
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

    def redis_fault(self, rng: random.Random, down_for: float) -> None:
        """The store's fault (see ``EmbeddedStore`` and ``ClusterStore``)."""
        self.redis.fault(rng, down_for)

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
        self.redis.stop()
