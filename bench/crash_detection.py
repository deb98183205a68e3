"""How fast does actionq turn a crash into an error?

    python -m bench.crash_detection --rounds 20

- child: the pool child running the action is SIGKILLed (by the tool itself,
  which first appends the time to a stamp file); detection = the AgentErrorEvent's timestamp
  minus that time. The worker's main process notices and reports it.
- worker: the whole worker (main process and children) is SIGKILLed while the
  action runs; a standalone sweeper reports it when the worker's lease expires.

Prints min/median/p95/p99/max in seconds and writes JSON to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime
from pathlib import Path

from actionq.models import AgentErrorEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from bench.harness import ROOT, Stack, summary, wait_for


def _error_time(aq: ActionQ, conversation_id: str, action_id: str) -> float:
    def find() -> AgentErrorEvent | None:
        for event in aq.store.all_events(conversation_id):
            if isinstance(event, AgentErrorEvent) and event.action_id == action_id:
                return event
        return None

    event = wait_for(find, 60, f"the error of {action_id}")
    return datetime.fromisoformat(event.timestamp).timestamp()


def stamp_times(path: Path) -> list[float]:
    """The times a tool body wrote to its stamp file, one line per run."""
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def body_runs(stack: Stack, kind: str, rounds: int) -> list[int]:
    """How many times each round's tool body ran (``kind``: ``child`` or ``worker``),
    counted when called: call it at the end, after every round."""
    return [len(stamp_times(stack.base / f"{kind}-{i}.stamp")) for i in range(rounds)]


def measure_child_kills(stack: Stack, aq: ActionQ, rounds: int) -> list[float]:
    worker = stack.worker("child-kill")
    wait_for(lambda: aq.store.live_worker_ids(), 60, "the worker")
    latencies = []
    for i in range(rounds):
        cid = aq.create_conversation().id
        stamp = stack.base / f"child-{i}.stamp"
        action = aq.submit_action(cid, "crash_now", {"stamp_file": str(stamp)})
        detected = _error_time(aq, cid, action.id)
        latencies.append(detected - stamp_times(stamp)[0])
        time.sleep(0.3)  # let the pool replace its child before the next round
    stack.kill_group(worker)
    return latencies


def measure_worker_kills(stack: Stack, aq: ActionQ, rounds: int) -> list[float]:
    stack.sweeper()
    latencies = []
    for i in range(rounds):
        worker = stack.worker(f"node-{i}")
        cid = aq.create_conversation().id
        stamp = stack.base / f"worker-{i}.stamp"
        action = aq.submit_action(cid, "sleep", {"seconds": 300, "stamp_file": str(stamp)})
        wait_for(stamp.exists, 60, "the action to start")
        killed_at = time.time()
        stack.kill_group(worker)
        latencies.append(_error_time(aq, cid, action.id) - killed_at)
        print(f"  worker kill {i + 1}/{rounds}: {latencies[-1]:.2f}s", flush=True)
    return latencies


def _row(name: str, values: list[float]) -> str:
    s = summary(values)
    return (
        f"{name:28} n={s['n']:<3} min {s['min']:.3f}  median {s['median']:.3f}  "
        f"p95 {s['p95']:.3f}  p99 {s['p99']:.3f}  max {s['max']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/crash_detection.json")
    args = parser.parse_args()

    stack = Stack()
    try:
        settings = Settings(redis_url=stack.url, tool_modules=["bench.tools"])
        aq = ActionQ(settings)
        print(f"crash detection, {args.rounds} rounds each (seconds from kill to AgentErrorEvent)")
        child = measure_child_kills(stack, aq, args.rounds)
        print(_row("pool child SIGKILL", child), flush=True)
        whole = measure_worker_kills(stack, aq, args.rounds)
        print(_row("child SIGKILL", child))
        print(_row("whole worker SIGKILL", whole))
        print(
            f"(lease {settings.worker_lease_seconds}s, heartbeat {settings.heartbeat_interval}s, "
            f"sweep {settings.sweep_interval}s)"
        )
    finally:
        stack.close()
    result = {
        "machine": f"{platform.node()} {platform.machine()} {platform.python_version()}",
        "date": datetime.now().isoformat(timespec="seconds"),
        "settings": {
            "worker_lease_seconds": settings.worker_lease_seconds,
            "heartbeat_interval": settings.heartbeat_interval,
            "sweep_interval": settings.sweep_interval,
            "pool_maintain_interval": settings.pool_maintain_interval,
        },
        "child_sigkill_s": summary(child),
        "worker_sigkill_s": summary(whole),
        "raw": {"child": child, "worker": whole},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
