"""actionq's side: one worker (prefork, ``concurrency`` children) running the
``noop`` tool of ``bench/tools.py``, measured through the public ``ActionQ`` API."""

from __future__ import annotations

import json
import time
from typing import Any

from actionq.local.processes import worker_command
from actionq.service import ActionQ
from actionq.settings import Settings
from bench.harness import Stack, wait_for
from bench.rounds import Round

__all__ = ["ActionqSide"]

TERMINAL_KINDS = {"ObservationEvent", "AgentErrorEvent", "UserRejectObservation"}
_WINDOW = 200  # actions checked per round trip once the last one is done
_POLL = 0.005


class ActionqSide:
    """Start with a running worker; ``close`` stops it (warm shutdown).

    ``env``: more ``ACTIONQ_*`` settings, for the worker and this client alike
    (a key prefix, a queue, a broker, replica acks: ``bench.suite.topology``
    runs several sides on one store); ``name`` names the worker and its log.
    """

    def __init__(
        self,
        stack: Stack,
        concurrency: int,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.stack = stack
        env = env or {}
        fields: dict[str, Any] = {k.removeprefix("ACTIONQ_").lower(): v for k, v in env.items()}
        self.settings = Settings(
            **({"redis_url": stack.url, "tool_modules": ["bench.tools"]} | fields)
        )
        self.aq = ActionQ(self.settings)
        name = name or f"actionq-c{concurrency}"
        self.worker = stack.spawn(worker_command(concurrency, f"{name}@%h", "WARNING"), name, **env)
        wait_for(lambda: self.aq.store.live_worker_ids(), 60, "the actionq worker", 0.05)
        self.throughput(4 * concurrency, timeout=60)  # warm-up: every child imports and connects

    def close(self) -> None:
        self.stack.stop(self.worker)
        self.aq.close()

    def throughput(self, n: int, timeout: float | None = None) -> Round:
        """``n`` conversations with one noop action each (created beforehand,
        not timed): submit all, wait until every action has its terminal event."""
        conversations = [self.aq.create_conversation().id for _ in range(n)]
        return self._run(conversations, timeout)

    def run_conversations(self, conversations: list[str]) -> Round:
        """One noop action in each of these (existing) conversations."""
        return self._run(conversations, None)

    def sequential(self, n: int) -> Round:
        """``n`` noop actions in ONE conversation: they run one at a time."""
        cid = self.aq.create_conversation().id
        return self._run([cid] * n, None)

    def latency(self) -> float:
        """Seconds from ``submit_action`` until the client reads the terminal
        event from the conversation's event stream (XREAD BLOCK: pushed, not polled)."""
        cid = self.aq.create_conversation().id
        events = self.aq.store.keys.events(cid)
        redis = self.aq.store.redis
        start = time.perf_counter()
        action_id = self.aq.submit_action(cid, "noop", {}).id
        last = "0"
        while True:
            reply: Any = redis.xread({events: last}, block=10_000)
            if not reply:
                raise TimeoutError(f"no terminal event for action {action_id}")
            for entry_id, fields in reply[0][1]:
                last = entry_id
                event = json.loads(fields["e"])
                if event["kind"] in TERMINAL_KINDS and event.get("action_id") == action_id:
                    elapsed = time.perf_counter() - start
                    _check_observed(action_id, event["kind"])
                    return elapsed

    def _run(self, conversations: list[str], timeout: float | None) -> Round:
        start = time.perf_counter()
        refs = [(cid, self.aq.submit_action(cid, "noop", {}).id) for cid in conversations]
        submitted = time.perf_counter()
        self._wait_all(refs, timeout or max(60.0, len(refs) / 10))
        return Round(len(refs), submitted - start, time.perf_counter() - start)

    def _wait_all(self, refs: list[tuple[str, str]], timeout: float) -> None:
        """Wait until every action has its terminal event.

        Actions finish roughly in submission order, so the client watches only
        the last one submitted (one HMGET per poll, as cheap as raw Celery's
        counter read) and then checks every action, a window per round trip,
        waiting again for any still running. Every action is checked once at
        least, and its terminal event must be an observation.
        """
        keys, redis = self.aq.store.keys, self.aq.store.redis
        deadline = time.monotonic() + timeout

        def done(cid: str, aid: str) -> bool:
            return redis.hget(keys.action(cid, aid), "state") not in ("pending", "claimed")

        if refs:
            wait_for(lambda: done(*refs[-1]), timeout, f"action {refs[-1][1]}", _POLL)
        remaining = refs
        while remaining:
            window, rest = remaining[:_WINDOW], remaining[_WINDOW:]
            pipe = redis.pipeline(transaction=False)
            for cid, aid in window:
                pipe.hmget(keys.action(cid, aid), "state", "terminal_kind")
            left = []
            for ref, (state, kind) in zip(window, pipe.execute(), strict=True):
                if state in ("pending", "claimed"):
                    left.append(ref)
                else:
                    _check_observed(ref[1], kind)
            remaining = left + rest
            if left:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(remaining)} actions still running")
                time.sleep(_POLL)


def _check_observed(action_id: str, kind: str | None) -> None:
    if kind != "ObservationEvent":
        raise RuntimeError(f"noop action {action_id} ended with {kind}, not an observation")
