"""The topology harness itself (tests/topology.py): a real valkey cluster and
a real sentinel group fail over when a primary is SIGKILLed, and a write a
replica acknowledged (WAIT) survives; stop() leaves no server running."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import psutil
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from tests.topology import ValkeyCluster, ValkeySentinelGroup


def _replicated(port: int, replicas: int = 1) -> None:
    """WAIT on the primary at ``port`` until ``replicas`` replicas have every
    write so far (the harness kills primaries: an unreplicated write is lost)."""
    primary = redis.Redis(port=port)
    try:
        assert primary.wait(replicas, 5000) >= replicas
    finally:
        primary.close()


def _still_running(pids: list[int]) -> list[psutil.Process]:
    """Live processes with one of these pids, or in one of their process
    groups (a server's forks)."""
    running = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.pid in pids or os.getpgid(process.pid) in pids:
                running.append(process)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return running


def test_cluster_failover_keeps_replicated_keys_on_every_primary(
    valkey_cluster: ValkeyCluster,
) -> None:
    cluster = valkey_cluster
    assert cluster.url().startswith("redis+cluster://127.0.0.1:")
    assert len(cluster.startup_nodes) == 6
    # A key on each of the 3 primaries.
    keys_by_primary: dict[int, str] = {}
    for i in itertools.count():
        key = f"topology:{i}"
        keys_by_primary.setdefault(cluster.primary_for(key), key)
        if len(keys_by_primary) == 3:
            break
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes]
    )
    try:
        for primary, key in keys_by_primary.items():
            client.set(key, f"written on {primary}")
            _replicated(primary)
        victim_key = next(iter(keys_by_primary.values()))
        old = cluster.primary_for(victim_key)
        new = cluster.kill_primary_for(victim_key)
        assert new != old
        assert cluster.primary_for(victim_key) == new
        # The same client: redis-py rereads the slots when the old node refuses.
        for primary, key in keys_by_primary.items():
            assert client.get(key) == f"written on {primary}".encode()
        cluster.restart_node(old)
        with redis.Redis(port=old) as rejoined:
            role = rejoined.execute_command("ROLE")
        assert role[0] in (b"slave", "slave") and int(role[2]) == new
        assert client.get(victim_key) == f"written on {old}".encode()
    finally:
        client.close()


def test_sentinel_failover_keeps_a_replicated_write(valkey_sentinel: ValkeySentinelGroup) -> None:
    group = valkey_sentinel
    hosts = ",".join(f"127.0.0.1:{port}" for _, port in group.sentinels)
    assert group.url(2) == f"redis+sentinel://{hosts}/actionq/2"
    sentinel = Sentinel(group.sentinels, socket_timeout=2)
    primary = sentinel.master_for(group.master_name, socket_timeout=2)
    try:
        old = group.primary_port()
        primary.set("topology:sentinel", "before the failover")
        _replicated(old)
        new = group.kill_primary()
        assert new != old
        assert group.primary_port() == new
        # The same client: it asks the sentinels again when its connection breaks.
        assert primary.get("topology:sentinel") == b"before the failover"
        assert primary.connection_pool.get_master_address()[1] == new
        group.restart_node(old)
        primary.set("topology:sentinel", "after the failover")
        _replicated(new)
        with redis.Redis(port=old) as replica:
            assert replica.get("topology:sentinel") == b"after the failover"
    finally:
        primary.close()
        for client in sentinel.sentinels:
            client.close()


def test_a_failed_start_shows_the_logs_and_leaves_nothing_running(tmp_path: Path) -> None:
    cluster = ValkeyCluster(tmp_path / "cluster")
    taken = next(iter(cluster.nodes))
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with pytest.raises(AssertionError) as failure:
            cluster.start()
    assert f"node {taken} exited" in str(failure.value)
    assert "Address already in use" in str(failure.value)  # the node's log tail
    pids = [node.process.pid for node in cluster.nodes.values() if node.process is not None]
    assert len(pids) == 6
    assert _still_running(pids) == []


def test_stop_after_a_failover_leaves_nothing_running(tmp_path: Path) -> None:
    group = ValkeySentinelGroup(tmp_path / "sentinel").start()
    try:
        group.kill_primary()
    finally:
        group.stop()
    pids = [node.process.pid for node in group._all() if node.process is not None]
    assert len(pids) == 5
    assert _still_running(pids) == []
