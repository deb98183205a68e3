"""Seeded random faults against a ChaosStack."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections import Counter

import psutil

from tests.chaos.scenario_faults import ScenarioFaults
from tests.chaos.stack import ChaosStack

# kind -> weight
FAULT_WEIGHTS = {
    "kill_worker_child": 40,
    "kill_whole_worker": 15,
    "warm_shutdown_worker": 10,
    "kill_redis": 10,
    "restart_api": 15,
    "cold_shutdown_worker": 10,
    # tests/chaos/scenario_faults.py
    "start_worker_while_creating": 5,
    "redis_outage_workers_survive": 5,
    "crash_behind_long_queue": 2,
    "concurrent_retries": 4,
}


class FaultInjector(ScenarioFaults, threading.Thread):
    def __init__(
        self, stack: ChaosStack, rng: random.Random, total: int, mean_interval: float
    ) -> None:
        super().__init__(daemon=True, name="fault-injector")
        self.stack = stack
        self.rng = rng
        self.total = total
        self.mean_interval = mean_interval
        self.done = Counter[str]()
        self.skipped = Counter[str]()
        self.errors: list[str] = []
        self.extra_conversations: list[str] = []
        self.finished = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while sum(self.done.values()) < self.total and not self.stopping.is_set():
                time.sleep(self.rng.expovariate(1 / self.mean_interval))
                self.stack.ensure_workers()
                kinds, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
                kind = self.rng.choices(kinds, weights)[0]
                try:
                    if getattr(self, kind)():
                        self.done[kind] += 1
                    else:
                        self.skipped[kind] += 1
                except Exception as e:  # a fault that could not be injected
                    self.errors.append(f"{kind}: {e!r}")
        finally:
            self.finished.set()

    # --- the faults; each returns whether it did something ---------------
    def _busy_worker(self) -> psutil.Process | None:
        children = [c for w in self.stack.live_workers() for c in w.children()]
        return self.rng.choice(children) if children else None

    def kill_worker_child(self) -> bool:
        child = self._busy_worker()
        if child is None:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)
        return True

    def _pick_worker(self) -> object | None:
        live = self.stack.live_workers()
        # Keep at least one worker that was not just started.
        return self.rng.choice(live) if len(live) > 1 else None

    def kill_whole_worker(self) -> bool:
        worker = self._pick_worker()
        if worker is None:
            return False
        worker.kill_everything()  # type: ignore[attr-defined]
        self.stack.add_worker()
        return True

    def warm_shutdown_worker(self) -> bool:
        worker = self._pick_worker()
        if worker is None:
            return False
        self.stack.retire(worker, signal.SIGTERM)  # type: ignore[arg-type]
        self.stack.add_worker()
        return True

    def cold_shutdown_worker(self) -> bool:
        worker = self._pick_worker()
        if worker is None:
            return False
        self.stack.retire(worker, signal.SIGQUIT)  # type: ignore[arg-type]
        self.stack.add_worker()
        return True

    def kill_redis(self) -> bool:
        self.stack.redis_fault(self.rng, down_for=self.rng.uniform(0.2, 2.0))
        return True

    def restart_api(self) -> bool:
        self.stack.restart_api()
        return True
