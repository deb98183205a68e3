"""The benchmark suite still runs (tiny sizes; no numbers are checked here:
benchmarks are not tests, and these machines are noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.timeout(300)
def test_quick_benchmark_run_completes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-peers", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"compare", "scaling", "crash_detection", "memory", "agent"} <= set(results)
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert (tmp_path / "agent_loop.png").stat().st_size > 0
    # The agent section ran every conversation to its answer (it raises otherwise).
    for run in results["agent"]["concurrency"]["runs"]:
        assert run["outcomes"] == {"finished": run["conversations"]}, run["outcomes"]


@pytest.mark.timeout(200)
def test_cpu_split_runs_and_accounts_every_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.cpu_split", "--n", "300", "--rounds", "1",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    split = json.loads((tmp_path / "cpu_split.json").read_text())
    assert set(split) == {"actionq", "celery_fire_and_forget", "celery_results"}
    for side in split.values():
        # Every role did some work (CPU time ticks are 10 ms: 300 tasks is plenty);
        # a role read as 0 would mean a process was missed.
        assert all(us > 0 for us in side["cpu_us_per_task"].values()), side


@pytest.mark.timeout(150)
def test_quick_topology_run_measures_every_layout(tmp_path: Path) -> None:
    """``--only topology`` (about 35 s): every layout ran its rounds, and
    replica acks on made the store WAIT while off did not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "topology", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=140,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    topology = json.loads((tmp_path / "results.json").read_text())["topology"]
    sides = topology["throughput"]
    # Without RabbitMQ the sides that need it say so instead of a number.
    measured = {name for name, side in sides.items() if "tasks_per_s" in side}
    assert {"single", "replicated_no_acks", "replicated_acks"} <= measured, sides
    for name in measured:
        assert sides[name]["tasks_per_s"]["rounds"] == 3, (name, sides[name])
        waits = sides[name]["wait_calls_per_action"]
        if name in ("cluster_acks", "replicated_acks"):
            assert waits >= 1, (name, waits)  # a WAIT after each write step, several per action
        else:
            assert waits < 0.5, (name, waits)  # none, but the odd heartbeat of an idle twin
    assert topology["ratios"]["replicated_acks"]["no_acks_twin"] > 0
