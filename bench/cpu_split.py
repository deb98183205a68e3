"""Where the CPU goes: CPU time per task of each process, actionq vs raw Celery.

    python -m bench.cpu_split [--n 2000] [--rounds 5]

Runs the same throughput rounds as ``compare`` (actionq with one action per
conversation, raw Celery fire-and-forget and with a result backend) and reads
each process's user + system CPU time before and after every round: the
client (this process), the server, the worker's main process and its pool
children. On a machine where all of them share the cores, the side that
spends less CPU per task gets more tasks through. Prints the medians over
rounds, in microseconds per task, and writes ``docs/benchmarks/cpu_split.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench.actionq_side import ActionqSide
from bench.harness import ROOT, Stack
from bench.raw_side import RawCelerySide
from bench.rounds import Round

ROLES = ("client", "server", "worker main", "pool children")


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _split(
    run: Callable[[], Round], worker: subprocess.Popen[bytes], server: psutil.Process
) -> tuple[Round, dict[str, float]]:
    main = psutil.Process(worker.pid)
    processes = {
        "client": [psutil.Process()],
        "server": [server],
        "worker main": [main],
        "pool children": main.children(),
    }
    before = {role: _cpu_seconds(p) for role, p in processes.items()}
    result = run()
    return result, {
        role: (_cpu_seconds(p) - before[role]) / result.n * 1e6 for role, p in processes.items()
    }


def measure(n: int, rounds: int, concurrency: int = 2) -> dict[str, Any]:
    samples: dict[str, list[tuple[Round, dict[str, float]]]] = {}
    with Stack() as stack:
        assert stack.server is not None and stack.server.process is not None
        server = psutil.Process(stack.server.process.pid)
        aq = ActionqSide(stack, concurrency)
        raw = RawCelerySide(stack, concurrency)
        try:
            for _ in range(rounds):
                conversations = [aq.aq.create_conversation().id for _ in range(n)]
                sides: dict[str, tuple[Callable[[], Round], subprocess.Popen[bytes]]] = {
                    "actionq": (partial(aq.run_conversations, conversations), aq.worker),
                    "celery_fire_and_forget": (lambda: raw.fire_and_forget(n), raw.worker),
                    "celery_results": (lambda: raw.with_results(n), raw.worker),
                }
                for name, (run, worker) in sides.items():
                    samples.setdefault(name, []).append(_split(run, worker, server))
        finally:
            aq.close()
            raw.close()
    return {
        name: {
            "tasks_per_s": statistics.median(r.rate for r, _ in runs),
            "cpu_us_per_task": {
                role: statistics.median(split[role] for _, split in runs) for role in ROLES
            },
            "rounds": len(runs),
        }
        for name, runs in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    result = measure(args.n, args.rounds)
    table = Table(title=f"CPU µs per task (median of {args.rounds} rounds of {args.n})")
    for column in ("side", "tasks/s", *ROLES, "total"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for name, side in result.items():
        cpu = side["cpu_us_per_task"]
        table.add_row(
            name,
            f"{side['tasks_per_s']:.0f}",
            *(f"{cpu[role]:.0f}" for role in ROLES),
            f"{sum(cpu.values()):.0f}",
        )
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_split.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
