"""The crash promises on a store that Sentinel watches: a real primary, a
replica and 3 sentinels (tests/topology.py), the store and the broker both
through them (``redis+sentinel://``; kombu's sentinel transport). The crash
tests of test_crashes.py run here as they are; the failover test kills the
primary mid-run. Each test has its own database of the group."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import redis

from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.topology import ValkeySentinelGroup, valkey_sentinel
from tests.worker.failover import run_through_a_failover
from tests.worker.test_crashes import (
    test_killed_child_becomes_agent_error_and_never_reruns,
    test_whole_worker_killed_redelivery_runs_nothing,
    test_worker_start_up_recovers_a_conversation_left_running,
)

# Collected here too, on a Sentinel store and broker.
__all__ = [
    "test_killed_child_becomes_agent_error_and_never_reruns",
    "test_whole_worker_killed_redelivery_runs_nothing",
    "test_worker_start_up_recovers_a_conversation_left_running",
    "valkey_sentinel",
]

_databases = itertools.count(1)


@pytest.fixture
def redis_url(valkey_sentinel: ValkeySentinelGroup) -> str:
    # The group is this module's own; each test keeps to its own database.
    return valkey_sentinel.url(next(_databases))


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    # A failover takes ~2 s here: longer than that, a lease renewed on the
    # old primary would look lapsed. A redelivery still comes after the
    # lease (what test_whole_worker_killed_redelivery_runs_nothing needs).
    return settings_env | {
        "ACTIONQ_WORKER_LEASE_SECONDS": "8",
        "ACTIONQ_VISIBILITY_TIMEOUT": "12",
    }


def test_the_store_and_the_broker_go_through_the_sentinels(aq: ActionQ) -> None:
    assert aq.settings.effective_broker_url.startswith("sentinel://")
    assert aq.store.broker is None  # direct enqueue needs a plain redis:// broker
    assert aq.store.ping()


def test_a_primary_failover_mid_run_loses_no_acknowledged_action(
    aq: ActionQ,
    start_worker: WorkerFactory,
    workdir: Path,
    valkey_sentinel: ValkeySentinelGroup,
) -> None:
    """Replica acks are on by default (the primary has a replica); see
    ``run_through_a_failover`` for what is checked."""
    waited = {"before": 0}

    def kill(_cid: str) -> int:
        waited["before"] = _wait_calls(valkey_sentinel.primary_port())
        return valkey_sentinel.kill_primary()

    run_through_a_failover(
        aq,
        start_worker,
        workdir,
        kill=kill,
        waits=lambda: waited["before"],
    )


def _wait_calls(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_wait", {}).get("calls", 0))
    finally:
        client.close()
