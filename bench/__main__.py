"""Every benchmark in sequence: ``python -m bench`` (full) or ``python -m bench --quick``.

Sections (each starts its own embedded server and workers, and stops them):

- compare: actionq vs raw Celery (and Dramatiq/RQ if installed), throughput
  and latency of no-op tasks, same server, same worker concurrency;
- scaling: actionq throughput with 1, 2 and 4 prefork processes;
- crash: crash detection (``bench.crash_detection``), and raw Celery in the
  same crash situations (``bench.raw_crash_side``);
- memory: the API's memory while one client pages through, then replays
  over SSE, a long conversation (``bench.api_memory``);
- agent: the agent loop against a fake model: ms per step against the same
  loop in one process, and many conversations on one agent worker
  (``bench.agent_loop``);
- topology (only when named in ``--only``): actionq's throughput on one
  server, one server with RabbitMQ, a 3-primary Redis Cluster with a replica
  each (replica acks off and on) and one primary with one replica (off and
  on), in the same run (``bench.topology`` starts the layouts);
- openhands (only when named in ``--only``): actionq's ``up`` against
  OpenHands' agent-server, both driven by OpenHands' RemoteConversation (a
  Python 3.12 venv with the pinned SDK and server, built once and cached):
  time per step, batches of conversations, memory, a crash
  (``bench.openhands_peer``).

Prints tables, writes ``results.json`` and PNG plots to ``--out``
(default ``docs/benchmarks/``; with ``--quick``, a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import celery

from bench import suite
from bench.agent_loop import AgentBench
from bench.harness import ROOT
from bench.openhands_peer import OpenHandsBench
from bench.report import print_report
from bench.suite import Config, console

SECTIONS = ("compare", "scaling", "crash", "memory", "agent", "topology", "openhands")
# topology starts 9 servers and needs RabbitMQ, openhands a Python 3.12 venv
# with OpenHands' packages: they run when asked for.
DEFAULT_SECTIONS = ("compare", "scaling", "crash", "memory", "agent")
FULL = Config(
    n=1000,
    rounds=5,
    latency_samples=200,
    crash_rounds=20,
    worker_kill_rounds=20,
    poison_window_s=20.0,
    raw_visibility_timeout=10,
    concurrency=2,
    scaling=(1, 2, 4),
    peers=True,
    memory_events=100_000,
    memory_baseline=100,
    agent=AgentBench(
        steps=50,
        step_rounds=3,
        conversations=200,
        delay_s=1.0,
        # ACTIONQ_AGENT_CONCURRENCY's default; enough threads; two processes.
        worker_shapes=((1, 64), (1, 200), (2, 100)),
        tool_concurrency=2,
    ),
    openhands=OpenHandsBench(
        steps=20,
        step_rounds=3,
        batches=(1, 8),
        timeout_s=300,
        crash_timeout_s=120,
    ),
)
QUICK = Config(
    n=30,
    rounds=3,
    latency_samples=15,
    crash_rounds=3,
    worker_kill_rounds=1,
    poison_window_s=6.0,
    raw_visibility_timeout=10,
    concurrency=2,
    scaling=(1, 2, 4),
    peers=True,
    memory_events=5_000,
    memory_baseline=100,
    agent=AgentBench(
        steps=10,
        step_rounds=1,
        conversations=20,
        delay_s=0.2,
        worker_shapes=((1, 6), (2, 10)),
        tool_concurrency=2,
    ),
    openhands=OpenHandsBench(
        steps=5, step_rounds=1, batches=(1, 2), timeout_s=120, crash_timeout_s=45
    ),
)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (under a minute)")
    parser.add_argument("--rounds", type=int, help="throughput rounds per side (≥3 for min/max)")
    parser.add_argument("--n", type=int, help="no-op tasks per throughput round")
    parser.add_argument("--latency-samples", type=int, help="latency samples per side")
    parser.add_argument("--crash-rounds", type=int, help="pool-child kills")
    parser.add_argument(
        "--worker-kill-rounds",
        type=int,
        help="whole-worker kills (actionq ~5 s each; raw Celery at most 3, ~15-25 s each)",
    )
    parser.add_argument(
        "--poison-window",
        type=float,
        help="seconds to count runs of raw Celery's task_reject_on_worker_lost=True loop",
    )
    parser.add_argument("--concurrency", type=int, help="prefork processes in the comparison")
    parser.add_argument("--memory-events", type=int, help="events the API reads (memory)")
    parser.add_argument("--no-peers", action="store_true", help="skip Dramatiq and RQ")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections: {', '.join(SECTIONS)} "
        "(default: all but topology and openhands)",
    )
    parser.add_argument("--out", type=Path, help="folder for results.json and the plots")
    return parser.parse_args()


def _config(args: argparse.Namespace) -> Config:
    base = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {
        "n": args.n,
        "rounds": args.rounds,
        "latency_samples": args.latency_samples,
        "crash_rounds": args.crash_rounds,
        "worker_kill_rounds": args.worker_kill_rounds,
        "poison_window_s": args.poison_window,
        "concurrency": args.concurrency,
        "memory_events": args.memory_events,
    }
    values = {k: v for k, v in overrides.items() if v is not None}
    if args.no_peers:
        values["peers"] = False
    return dataclasses.replace(base, **values)


def main() -> None:
    args = _parse()
    config = _config(args)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}; known: {SECTIONS}")
    out = args.out or (
        Path(tempfile.gettempdir()) / "actionq-bench-quick"
        if args.quick
        else ROOT / "docs/benchmarks"
    )
    result: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cores": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "node": platform.node(),
            "python": platform.python_version(),
            "celery": celery.__version__,
        },
        "config": dataclasses.asdict(config),
    }
    console.print(f"actionq benchmarks on {os.cpu_count()} cores: {', '.join(sections)}")
    if config.rounds < 3:
        console.print(f"warning: --rounds {config.rounds}: min/median/max need at least 3")
    started = time.monotonic()
    runners = {
        "compare": suite.compare,
        "scaling": suite.scaling,
        "crash": suite.crash,
        "memory": suite.memory,
        "agent": suite.agent,
        "topology": suite.topology,
        "openhands": suite.openhands,
    }
    for section in sections:
        console.rule(section)
        key = "crash_detection" if section == "crash" else section
        result[key] = runners[section](config)
    result["wall_s"] = time.monotonic() - started
    print_report(result, console)

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    from bench.plots import write_plots

    written = [out / "results.json", *write_plots(result, out)]
    console.print(f"wrote {', '.join(str(p) for p in written)} in {result['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
