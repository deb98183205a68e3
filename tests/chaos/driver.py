"""Drives scripted conversations through the HTTP API, as external agents
would: post a step (with an idempotency key, so a retry after an error is
safe), wait for it to end, resume after a crash, post the next."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.stack import ChaosStack

TERMINAL_STATES = {"done", "errored", "cancelled"}


@dataclass
class Script:
    conversation_id: str
    steps: list[dict[str, Any]]
    next_step: int = 0
    waiting: list[str] = field(default_factory=list)  # action ids in flight
    resumes: int = 0

    @property
    def finished(self) -> bool:
        return self.next_step >= len(self.steps) and not self.waiting


def make_steps(rng: random.Random, count: int, log: str) -> list[dict[str, Any]]:
    steps = []
    for _ in range(count):
        roll = rng.random()
        then = "crash" if roll < 0.05 else "raise" if roll < 0.10 else "return"
        steps.append({"log": log, "seconds": round(rng.uniform(0.02, 0.6), 3), "then": then})
    return steps


class Driver:
    def __init__(
        self, stack: ChaosStack, rng: random.Random, concurrent: int, steps_per_conversation: int
    ) -> None:
        self.stack = stack
        self.rng = rng
        self.concurrent = concurrent
        self.steps_per_conversation = steps_per_conversation
        self.http = httpx.Client(
            base_url=stack.api_url, headers={"X-Session-API-Key": stack.api_key}, timeout=5
        )
        self.scripts: list[Script] = []
        self.api_errors = 0
        # Every action the API acknowledged (returned an id for), per conversation.
        self.acknowledged: dict[str, set[str]] = {}

    @property
    def planned_actions(self) -> int:
        """Steps of every script opened so far: each is posted before the run settles."""
        return sum(len(s.steps) for s in self.scripts)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any | None:
        """One API call; None if the API (or Redis behind it) is away right now."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError:
            self.api_errors += 1
            return None
        if response.status_code >= 500 or response.status_code == 409:
            self.api_errors += 1
            return None
        response.raise_for_status()  # anything else is a bug in the harness or the API
        return response.json()

    def _open_conversation(self) -> None:
        created = self._call("POST", "/api/conversations")
        if created is not None:
            steps = make_steps(self.rng, self.steps_per_conversation, str(self.stack.side_effects))
            self.scripts.append(Script(created["id"], steps))

    def _advance(self, script: Script) -> None:
        cid = script.conversation_id
        for action_id in list(script.waiting):
            action = self._call("GET", f"/api/actions/{action_id}")
            if action is None:
                return
            if action["state"] in TERMINAL_STATES:
                script.waiting.remove(action_id)
        if script.waiting or script.next_step >= len(script.steps):
            return
        conversation = self._call("GET", f"/api/conversations/{cid}")
        if conversation is None:
            return
        if conversation["execution_status"] in ("error", "paused"):
            if self._call("POST", f"/api/conversations/{cid}/resume") is None:
                return
            script.resumes += 1
        batch = self.rng.choice((1, 1, 2))
        for _ in range(batch):
            if script.next_step >= len(script.steps):
                break
            step = script.next_step
            body = {
                "tool": "chaos_step",
                "arguments": script.steps[step],
                "idempotency_key": f"step-{step}",
            }
            action = self._call("POST", f"/api/conversations/{cid}/actions", json=body)
            if action is None:
                return  # posted again with the same key next time: no duplicate
            script.waiting.append(action["id"])
            self.acknowledged.setdefault(cid, set()).add(action["id"])
            script.next_step += 1

    def tick(self, open_new: bool) -> None:
        active = [s for s in self.scripts if not s.finished]
        if open_new:
            for _ in range(self.concurrent - len(active)):
                self._open_conversation()
        for script in self.scripts:
            if not script.finished:
                self._advance(script)

    def run_until(self, keep_opening: Any, deadline: float) -> bool:
        """Tick until ``keep_opening()`` is false and every script finished."""
        while time.monotonic() < deadline:
            opening = bool(keep_opening())
            self.tick(opening)
            if not opening and all(s.finished for s in self.scripts):
                return True
            time.sleep(0.05)
        return False
