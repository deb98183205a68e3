"""``python -m tests.chaos``: a chaos soak against the real stack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from tests.chaos.runner import print_summary, run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=50, help="faults to inject")
    parser.add_argument("--interval", type=float, default=1.0, help="mean seconds between faults")
    parser.add_argument("--conversations", type=int, default=12, help="open at once")
    parser.add_argument("--steps", type=int, default=8, help="actions per conversation")
    parser.add_argument(
        "--min-actions", type=int, default=0, help="keep opening conversations until this many"
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--store",
        choices=("embedded", "cluster"),
        default="embedded",
        help="an embedded server, or a 3-primary valkey cluster with RabbitMQ on 127.0.0.1:5672",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    console = Console()
    console.print(
        f"chaos: seed {args.seed}, {args.faults} faults every ~{args.interval}s, "
        f"{args.conversations} conversations at a time x {args.steps} steps, on {args.store}"
    )
    result = run_chaos(
        args.seed,
        args.faults,
        args.interval,
        args.conversations,
        args.steps,
        args.data_dir,
        store=args.store,
        min_actions=args.min_actions,
    )
    print_summary(result, console)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seed": result.seed,
                    "store": result.store,
                    "seconds": round(result.seconds, 1),
                    "faults": result.faults,
                    "conversations": result.report.conversations,
                    "actions": result.report.actions,
                    "outcomes": dict(result.report.outcomes),
                    "final_statuses": dict(result.report.statuses),
                    "violations": result.report.violations,
                    "settled": result.settled,
                },
                indent=2,
            )
        )
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
