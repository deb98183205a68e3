"""Faults that are scenarios rather than one kill: each found a bug once (a
worker that could not start while conversations were being created, a worker
killed for good by a Redis outage, a crash behind a long queue stalling other
conversations, concurrent retries storing what they refused). Each checks its
own promise at once and reports a broken one as a fault error; the
conversations it makes are checked with the rest once the system is quiet."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from pathlib import Path

from actionq.errors import ActionqError
from actionq.models import ConversationStatus
from actionq.service import ActionQ
from tests.chaos.stack import ChaosStack

__all__ = ["ScenarioFaults"]


class ScenarioFaults:
    stack: ChaosStack
    rng: random.Random
    # Conversations made by these faults, for the invariant check.
    extra_conversations: list[str]

    def _client(self) -> ActionQ:
        return ActionQ(self.stack.settings())

    def _wait(self, predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {what}")
            time.sleep(0.1)

    def start_worker_while_creating(self) -> bool:
        """A worker starts while clients create conversations, some of them
        listed but not yet (or never: the client died) written."""
        with self._client() as aq:
            store = aq.store
            stop = threading.Event()

            def create_slowly() -> None:
                while not stop.is_set():
                    cid = f"half-{self.rng.randrange(10**12)}"
                    # The index entry first, as create_conversation writes it;
                    # every other one is never written (its client died).
                    store.redis.zadd(store.keys.conversation_index(), {cid: time.time()})
                    time.sleep(0.05)
                    if self.rng.random() < 0.5:
                        with contextlib.suppress(ActionqError):
                            self.extra_conversations.append(store.create_conversation(cid).id)

            creator = threading.Thread(target=create_slowly, daemon=True)
            creator.start()
            try:
                worker = self.stack.add_worker()
                worker.wait_ready(60)  # raises if it exited instead
            finally:
                stop.set()
                creator.join(10)
        # It replaces an older one (warm shutdown), so the stack keeps its size.
        older = [w for w in self.stack.serving_workers() if w is not worker]
        if older:
            self.stack.retire(older[0], signal.SIGTERM)
        return True

    def redis_outage_workers_survive(self) -> bool:
        """Redis goes away for a few seconds (on a cluster: a primary, until
        its replica takes over); with nobody topping workers up,
        every worker that was serving must serve again afterwards (not those
        an earlier fault told to shut down, which may still be finishing)."""
        serving = {w.pid: w for w in self.stack.serving_workers()}
        self.stack.redis_fault(self.rng, down_for=self.rng.uniform(1.0, 4.0))
        with self._client() as aq:

            def all_leased_again() -> bool:
                for pid, worker in serving.items():
                    if not worker.is_alive():
                        raise AssertionError(
                            f"worker {worker.name} (pid {pid}) died in the outage; its log "
                            f"ends:\n{worker.log()[-4000:]}"
                        )
                try:
                    live = aq.store.live_worker_ids()
                except ActionqError:
                    return False
                leased = {int(worker_id.split(":")[1]) for worker_id in live}
                return set(serving) <= leased

            self._wait(all_leased_again, 60, "every worker to hold a lease again")
        return True

    def crash_behind_long_queue(self) -> bool:
        """An action crashes its worker with 2,000 calls queued behind it
        while the other conversations run."""
        go = Path(self.stack.base) / f"go-{self.rng.randrange(10**9)}"
        with self._client() as aq:
            cid = aq.create_conversation().id
            self.extra_conversations.append(cid)
            aq.submit_action(
                cid,
                "terminal",
                {"command": f"while [ ! -e {go} ]; do sleep 0.05; done; kill -9 $PPID; sleep 5"},
            )
            step = {"log": str(self.stack.side_effects), "seconds": 0.01}
            for _ in range(2000):
                aq.submit_action(cid, "chaos_step", step)
            go.touch()
            self._wait(
                lambda: aq.get_conversation(cid).status == ConversationStatus.ERROR,
                120,
                f"conversation {cid} to stop after its crash",
            )
        return True

    def concurrent_retries(self) -> bool:
        """Twenty clients retry one crashed call at once: at most one retry."""
        with self._client() as aq:
            cid = aq.create_conversation().id
            self.extra_conversations.append(cid)
            step = {"log": str(self.stack.side_effects), "seconds": 0.05, "then": "crash"}
            crashed = aq.submit_action(cid, "chaos_step", step)
            self._wait(
                lambda: aq.get_action(crashed.id).state not in ("pending", "claimed"),
                120,
                f"action {crashed.id} to crash",
            )
            barrier = threading.Barrier(20)
            retried: list[str] = []

            def retry() -> None:
                with contextlib.suppress(threading.BrokenBarrierError, ActionqError):
                    barrier.wait(10)
                    retried.append(aq.retry_action(crashed.id).id)

            threads = [threading.Thread(target=retry) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            stored = aq.store.list_action_ids(cid)
            if len(retried) > 1 or len(stored) > 2:
                raise AssertionError(
                    f"{len(retried)} retries answered, {len(stored) - 1} stored: at most one"
                )
        return True
