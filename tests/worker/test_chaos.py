"""The short chaos soak: ~50 seeded faults against the real stack, then the
invariants (see tests/chaos/invariants.py). The long run is documented in
docs/reliability.md. Set CHAOS_SEED to try another seed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.runner import print_summary, run_chaos


@pytest.mark.timeout(600)
def test_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", "7"))
    result = run_chaos(seed, faults=50, mean_interval=0.8, base=tmp_path / "chaos")
    print_summary(result)
    assert sum(result.faults.values()) >= 50
    assert result.report.actions >= 200
    assert result.settled, "the system did not settle in time"
    assert result.fault_errors == [], "\n\n".join(result.fault_errors)
    assert result.report.violations == [], f"seed {seed}: {result.report.violations[:10]}"
