"""The crash promises on a Redis Cluster store: a real 3-primary valkey
cluster (a replica each, tests/topology.py) with RabbitMQ as the broker
(kombu cannot use a Cluster). The crash tests of test_crashes.py and
test_rabbitmq.py run here as they are, on this module's settings; the tests
below add what only a Cluster has: the per-status index applied by the
caller, a lost turn sent again without direct enqueue, and a primary killed
mid-run with replica acks on. Each test has its own key prefix and queue.
Skipped when no RabbitMQ answers on 127.0.0.1:5672."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from kombu import Connection, Queue

from actionq.models import ConversationStatus, ObservationEvent
from actionq.service import ActionQ
from actionq.store import ActionStore
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, terminal_events
from tests.helpers import wait_for
from tests.topology import ValkeyCluster, valkey_cluster
from tests.worker.failover import run_through_a_failover
from tests.worker.test_crashes import (
    test_worker_start_up_recovers_a_conversation_left_running,
)
from tests.worker.test_rabbitmq import (
    AMQP_URL,
    _rabbitmq_up,
    rabbit_aq,
    rabbit_env,
    test_an_agent_runs_with_rabbitmq_its_steps_sent_by_celery,
    test_killed_child_errors_once_with_rabbitmq,
    test_whole_worker_killed_with_rabbitmq_runs_nothing_twice,
)

# Collected here too, on a Cluster store (pytest runs what a module holds).
__all__ = [
    "rabbit_aq",
    "rabbit_env",
    "test_an_agent_runs_with_rabbitmq_its_steps_sent_by_celery",
    "test_killed_child_errors_once_with_rabbitmq",
    "test_whole_worker_killed_with_rabbitmq_runs_nothing_twice",
    "test_worker_start_up_recovers_a_conversation_left_running",
    "valkey_cluster",
]

pytestmark = pytest.mark.skipif(not _rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672")


@pytest.fixture
def redis_url(valkey_cluster: ValkeyCluster) -> str:
    # The cluster is this module's own; each test keeps to its own prefix.
    return valkey_cluster.url()


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """conftest's settings on the Cluster, each test with its own prefix and
    its own RabbitMQ queues (deleted afterwards)."""
    name = f"aq-cluster-{uuid.uuid4().hex[:10]}"
    settings_env.update(
        {
            "ACTIONQ_KEY_PREFIX": name,
            "ACTIONQ_BROKER_URL": AMQP_URL,
            "ACTIONQ_QUEUE": name,
            "ACTIONQ_AGENT_QUEUE": f"{name}.agent",
            # A primary's failover takes ~2 s here: longer than that, a
            # lease renewed on the old primary would look lapsed.
            "ACTIONQ_WORKER_LEASE_SECONDS": "8",
        }
    )
    yield settings_env
    with Connection(AMQP_URL) as conn:
        for queue in (name, f"{name}.agent"):
            Queue(queue, channel=conn.channel()).delete()


def kill_primary_then_restart_it(cluster: ValkeyCluster, key: str, restarts: list[int]) -> int:
    """Kill the primary of ``key``'s slot (its replica takes over); note it,
    so ``restart_killed`` brings it back as a replica: a later test that
    kills the same shard's primary then has a replica to promote."""
    restarts.append(cluster.primary_for(key))
    return cluster.kill_primary_for(key)


def restart_killed(cluster: ValkeyCluster, restarts: list[int]) -> None:
    for port in restarts:
        cluster.restart_node(port)


def primaries(cluster: ValkeyCluster) -> list[redis.Redis]:
    """Clients of the nodes that are primaries now (the caller closes them)."""
    found = []
    for host, port in cluster.startup_nodes:
        client = redis.Redis(host=host, port=port)
        try:
            if client.info("replication")["role"] == "master":
                found.append(client)
                continue
        except redis.ConnectionError:
            pass
        client.close()
    return found


def test_the_per_status_index_follows_every_transition_on_the_cluster(aq: ActionQ) -> None:
    """The moves a script returns are applied by the caller: the index is
    right after each call, and a backfill agrees with it."""
    store = aq.store
    assert store.cluster
    cids = [aq.create_conversation().id for _ in range(12)]
    for cid in cids[:5]:
        aq.store.submit_action(cid, "terminal", {"command": "true"})
    aq.store.delete_conversation(cids[-1])

    def sets() -> dict[str, set[str]]:
        return {
            status.value: set(store.redis.zrange(store.keys.status_index(status.value), 0, -1))
            for status in ConversationStatus
        }

    expected = {status.value: set() for status in ConversationStatus} | {
        "running": set(cids[:5]),
        "idle": set(cids[5:-1]),
    }
    assert sets() == expected
    assert store.count_conversations_with_status("running") == 5
    # A move lost with its caller (it died after the script): the reconcile puts it back.
    store.redis.zrem(store.keys.status_index("running"), cids[0])
    store.redis.hdel(store.keys.status_revisions(), cids[0])
    assert store.reconcile_status_index(batch=4) == 11
    assert sets() == expected


def test_the_live_stream_follows_a_conversation_on_the_cluster(aq: ActionQ) -> None:
    """The API's event stream reads with the asyncio Cluster client."""
    cid = aq.create_conversation().id
    aq.store.submit_action(cid, "terminal", {"command": "true"})
    expected = [e.seq for e in aq.store.all_events(cid)]

    async def read() -> list[int]:
        follower = aq.event_follower()
        seqs: list[int] = []
        try:
            async for event in follower.follow(cid, 0, deadline=time.monotonic() + 5):
                if event is None:
                    break
                seqs.append(event.seq)
                if len(seqs) == len(expected):
                    break
        finally:
            await follower.close()
        return seqs

    # A thread of its own: a session fixture (Playwright's sync API) may
    # keep an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        assert expected and thread.submit(asyncio.run, read()).result(30) == expected


def test_a_turn_whose_message_was_lost_is_sent_again(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """Without direct enqueue the message goes after the step that made the
    action runnable; a process that died in between sent nothing. The
    sweeper sends it again (ACTIONQ_TURN_RESEND_SECONDS), and it runs once."""
    marker = workdir / "ran.log"
    start_worker(ACTIONQ_TURN_RESEND_SECONDS="1")
    cid = aq.create_conversation().id
    # The store's own transition, as a caller that died before sending does.
    lost = aq.store.submit_action(
        cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 0}
    ).action_id
    assert aq.get_conversation(cid).status == ConversationStatus.RUNNING
    wait_for(
        lambda: aq.get_conversation(cid).status == ConversationStatus.IDLE,
        30,
        what="the lost turn to be sent again and run",
    )
    assert [type(e) for e in terminal_events(aq, cid, lost)] == [ObservationEvent]
    assert count_lines(marker) == 1
    assert aq.store.resends(cid, lost) >= 1
    assert_log_consistent(aq, cid)


def test_direct_enqueue_is_off_on_a_cluster(aq: ActionQ) -> None:
    assert aq.store.broker is None
    with pytest.raises(ValueError, match="direct enqueue"):
        ActionStore(aq.store.redis, aq.store.keys, broker=object())  # type: ignore[arg-type]


def test_a_primary_killed_mid_run_loses_no_acknowledged_action(
    aq: ActionQ,
    start_worker: WorkerFactory,
    workdir: Path,
    valkey_cluster: ValkeyCluster,
) -> None:
    """Replica acks are on by default (each primary has a replica). A primary
    is killed while actions run and its replica takes over (see
    ``run_through_a_failover`` for what is checked)."""

    def waits_on_primaries() -> int:
        waits = 0
        for client in primaries(valkey_cluster):
            waits += int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
            client.close()
        return waits

    restarts: list[int] = []
    run_through_a_failover(
        aq,
        start_worker,
        workdir,
        kill=lambda cid: kill_primary_then_restart_it(
            valkey_cluster, aq.store.keys.conversation(cid), restarts
        ),
        waits=waits_on_primaries,
    )
    restart_killed(valkey_cluster, restarts)


def test_the_first_call_after_a_failover_goes_to_the_promoted_replica(
    aq: ActionQ, valkey_cluster: ValkeyCluster
) -> None:
    """The client's slot map still names the dead primary: its refused
    connection sends nothing, so the store reads the map again and sends the
    call to the replica that took over, instead of failing it."""
    cid = aq.create_conversation().id
    store = aq.store
    store.get_conversation(cid)  # a connection to the primary, pooled
    restarts: list[int] = []
    kill_primary_then_restart_it(valkey_cluster, store.keys.conversation(cid), restarts)
    result = store.submit_action(cid, "terminal", {"command": "true"})
    restart_killed(valkey_cluster, restarts)
    assert result.created
    assert store.get_conversation(cid).status == ConversationStatus.RUNNING
