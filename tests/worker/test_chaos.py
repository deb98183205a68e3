"""The short chaos soak: ~50 seeded faults against the real stack, then the
invariants (see tests/chaos/invariants.py). The long run is documented in
docs/reliability.md. Set CHAOS_SEED to try another seed. The same soak runs
on a Redis Cluster store (a real 3-primary valkey cluster, a replica each,
RabbitMQ as the broker), where the Redis fault kills a primary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.runner import ChaosResult, print_summary, run_chaos
from tests.worker.test_rabbitmq import _rabbitmq_up


def _assert_every_invariant(result: ChaosResult, faults: int, actions: int) -> None:
    print_summary(result)
    assert sum(result.faults.values()) >= faults
    assert result.report.actions >= actions
    assert result.settled, "the system did not settle in time"
    assert result.fault_errors == [], "\n\n".join(result.fault_errors)
    assert result.report.violations == [], f"seed {result.seed}: {result.report.violations[:10]}"


@pytest.mark.timeout(600)
def test_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", "7"))
    result = run_chaos(seed, faults=50, mean_interval=0.8, base=tmp_path / "chaos", min_actions=200)
    _assert_every_invariant(result, faults=50, actions=200)


@pytest.mark.skipif(
    not _rabbitmq_up(),
    reason="no RabbitMQ on 127.0.0.1:5672 (a Cluster store needs a separate broker)",
)
@pytest.mark.timeout(600)
def test_short_chaos_run_on_a_cluster_keeps_every_invariant(tmp_path: Path) -> None:
    """25 faults; ``kill_redis`` and the outage scenario kill the primary of
    a random slot, wait for its replica's promotion and restart the killed
    node as the new primary's replica."""
    seed = int(os.environ.get("CHAOS_SEED", "7"))
    result = run_chaos(
        seed,
        faults=25,
        mean_interval=0.8,
        base=tmp_path / "chaos",
        store="cluster",
        min_actions=200,
    )
    _assert_every_invariant(result, faults=25, actions=200)
