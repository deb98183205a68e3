"""The agent loop's state: messages, runs, steps, confirmations. Each change
is one Lua script on the conversation's slot (see docs/agent.md for the
state machine); ``AgentStore`` is that part of ``ActionStore``.

A step is claimed by one worker, recorded once by that worker (a second
delivery of a finished step appends nothing), and queued again if its
worker dies (a step is safe to repeat; a tool call never is).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.client import Pipeline

from actionq.errors import ConversationNotFound, InvalidTransition
from actionq.models import (
    ActionEvent,
    ConversationErrorEvent,
    ConversationStatus,
    Event,
    MessageEvent,
    UserRejectObservation,
    new_id,
    utc_now,
)
from actionq.store.client import RedisStore
from actionq.store.records import QueuedMessage, RunResult, WorkerIdentity, event_from_entry

__all__ = ["STEP_CLAIM", "AgentStore", "NewCall", "StepClaim", "StepRefused"]

# A worker's claim index entry for the agent step it runs (beside its
# ``cid/action id`` entries), so the sweep finds the step of a dead worker.
STEP_CLAIM = "step"


@dataclass(frozen=True)
class StepClaim:
    conversation_id: str
    task_id: str
    step: int
    attempt: int
    iteration: int
    max_iterations: int
    replies: int  # replies recorded before this step (a scripted agent's turn)


@dataclass(frozen=True)
class StepRefused:
    """``reason``: not_current | running | ended | not_running (see claim_step.lua)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class NewCall:
    """One tool call of a step's reply, as the step records it."""

    event: ActionEvent
    arguments_json: str
    fingerprint: str
    message: QueuedMessage | None  # its Celery message, under direct enqueue


class AgentStore(RedisStore):
    def _run_keys(self, cid: str) -> tuple[list[str], list[Any]]:
        """Keys and trailing argument shared by the scripts that may start work."""
        k = self.keys
        keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.agent(cid),
            k.confirmations(cid),
        ]
        extra: list[Any] = []
        if self.broker is not None:
            keys += [self.broker.queue_key, self.broker.step_queue_key]
            extra.append(self.broker.sent_event_channel)
        return keys, extra

    def agent_spec_json(self, conversation_id: str) -> tuple[str, str] | None:
        """(the agent spec, the confirmation policy set since, or ''), as JSON."""
        spec, policy = self._call(
            lambda: self.redis.hmget(self.keys.agent(conversation_id), ["spec", "policy"])
        )
        return (str(spec), str(policy or "")) if spec else None

    def set_confirmation_policy(self, conversation_id: str, policy_json: str) -> None:
        """The policy the agent's next steps use (the calls already waiting
        keep waiting: confirm or reject them)."""
        k = self.keys
        cid = conversation_id
        result = self._script(
            "set_confirmation_policy",
            [k.conversation(cid), k.events(cid), k.agent(cid)],
            [policy_json, new_id(), utc_now()],
        )
        if result == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result == "no_agent":
            raise InvalidTransition(f"conversation {cid} has no agent")

    def step_state(self, conversation_id: str) -> dict[str, str]:
        """The agent hash without its spec and template (for recovery and tests)."""
        fields = ("step", "step_state", "step_task", "step_owner", "step_attempts")
        values = self._call(lambda: self.redis.hmget(self.keys.agent(conversation_id), fields))
        return {name: str(v or "") for name, v in zip(fields, values, strict=True)}

    def pending_confirmation_ids(self, conversation_id: str) -> list[str]:
        ids = self._call(lambda: self.redis.lrange(self.keys.confirmations(conversation_id), 0, -1))
        return [str(i) for i in ids]

    def send_message(
        self, conversation_id: str, event: MessageEvent, *, run: bool
    ) -> tuple[int, RunResult]:
        cid = conversation_id
        keys, extra = self._run_keys(cid)
        args = [
            utc_now(),
            new_id(),
            self.keys.action(cid, ""),
            event.model_dump_json(exclude={"seq"}),
            "1" if run else "0",
            new_id(),
            *extra,
        ]
        result = self._script("send_message", keys, args)
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        return int(result[1]), RunResult.from_script(result[2], result[3:])

    def run_conversation(self, conversation_id: str) -> RunResult:
        cid = conversation_id
        keys, extra = self._run_keys(cid)
        args = [utc_now(), new_id(), self.keys.action(cid, ""), *extra]
        result = self._script("run_conversation", keys, args)
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(f"conversation {cid} is {result[1]}: it is already running")
        return RunResult.from_script(result[1], result[2:])

    def claim_step(
        self, conversation_id: str, task_id: str, worker: WorkerIdentity
    ) -> StepClaim | StepRefused:
        k = self.keys
        cid = conversation_id

        def build(pipe: Pipeline) -> None:
            pipe.sadd(k.worker_claims(worker.id), f"{cid}/{STEP_CLAIM}")
            self.evalsha_in(
                pipe, "claim_step", [k.conversation(cid), k.agent(cid)], [task_id, worker.id]
            )

        _, result = self._pipelined(build)
        if result[0] != "claimed":
            if result[0] != "running" or result[1] != worker.id:
                self.forget_step_claim(worker, cid)
            return StepRefused(str(result[0]), str(result[1]))
        step, attempt, iteration, max_iterations, replies = (int(v) for v in result[1:6])
        return StepClaim(cid, task_id, step, attempt, iteration, max_iterations, replies)

    def forget_step_claim(self, worker: WorkerIdentity | str, conversation_id: str) -> None:
        worker_id = worker if isinstance(worker, str) else worker.id
        self._call(
            lambda: self.redis.srem(
                self.keys.worker_claims(worker_id), f"{conversation_id}/{STEP_CLAIM}"
            )
        )

    def record_step(
        self,
        claim: StepClaim,
        worker: WorkerIdentity,
        *,
        message: MessageEvent | None,
        calls: list[NewCall],
        hold: bool,
        finished: bool,
    ) -> RunResult | None:
        """Append the step's reply once. ``hold``: the calls wait for the user's
        confirmation. Without calls, ``finished`` ends the run, else the next
        step is queued. None: this step was not ours to record (stale)."""
        k = self.keys
        cid = claim.conversation_id
        keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.actions(cid),
            k.tool_calls(cid),
            k.agent(cid),
            k.confirmations(cid),
        ]
        channel = ""
        if self.broker is not None:
            keys += [self.broker.queue_key, self.broker.step_queue_key]
            channel = self.broker.sent_event_channel
        args: list[Any] = [
            claim.step,
            worker.id,
            utc_now(),
            new_id(),
            k.action(cid, ""),
            "1" if hold else "0",
            "finished" if finished else "continue",
            message.model_dump_json(exclude={"seq"}) if message is not None else "",
            len(calls),
            channel,
        ]
        for call in calls:
            event = call.event
            args += [
                event.id,
                event.tool_call_id,
                event.model_dump_json(exclude={"seq"}),
                event.tool_name,
                call.arguments_json,
                call.fingerprint,
                call.message.task if call.message else "",
                call.message.sent_event if call.message else "",
            ]

        def build(pipe: Pipeline) -> None:
            # Index entries first, as submit writes them (docs/design.md (d)).
            for call in calls:
                pipe.hset(k.action_index(), call.event.id, cid)
            self.evalsha_in(pipe, "record_step", keys, args)

        result = self._pipelined(build)[-1]
        if result[0] != "ok":
            if calls:
                self._call(lambda: self.redis.hdel(k.action_index(), *[c.event.id for c in calls]))
            return None
        self.forget_step_claim(worker, cid)
        return RunResult.from_script(result[1], result[2:])

    def end_run(
        self,
        claim: StepClaim,
        worker: WorkerIdentity,
        event: ConversationErrorEvent | None,
        status: ConversationStatus,
    ) -> bool:
        k = self.keys
        cid = claim.conversation_id
        result = self._script(
            "end_run",
            [k.conversation(cid), k.events(cid), k.agent(cid)],
            [
                claim.step,
                worker.id,
                utc_now(),
                new_id(),
                event.model_dump_json(exclude={"seq"}) if event is not None else "",
                status.value,
            ],
        )
        if result[0] != "ok":
            # Not ours any more: the step may be claimed again by this very
            # worker (after a requeue), whose index entry must stay.
            return False
        self.forget_step_claim(worker, cid)
        return True

    def requeue_step(
        self, conversation_id: str, owner: str, max_attempts: int, error: ConversationErrorEvent
    ) -> tuple[str, str | None, bool]:
        """(outcome, task id to send, pushed): requeued | errored | dropped | skip."""
        k = self.keys
        cid = conversation_id
        keys = [k.conversation(cid), k.events(cid), k.agent(cid)]
        if self.broker is not None:
            keys.append(self.broker.step_queue_key)
        result = self._script(
            "requeue_step",
            keys,
            [owner, max_attempts, error.model_dump_json(exclude={"seq"}), utc_now(), new_id()],
        )
        if result[0] == "requeued":
            return "requeued", str(result[1]), bool(int(result[2]))
        return str(result[0]), None, False

    def reject_pending(self, conversation_id: str, reason: str) -> int:
        """waiting_for_confirmation -> idle; each held call gets a
        ``UserRejectObservation`` with ``reason``. Returns how many."""
        k = self.keys
        cid = conversation_id
        template = UserRejectObservation(
            action_id="", tool_call_id="", tool_name="", rejection_reason=reason
        )
        result = self._script(
            "reject_pending",
            [k.conversation(cid), k.events(cid), k.confirmations(cid)],
            [
                utc_now(),
                time.time(),
                new_id(),
                template.model_dump_json(exclude={"seq"}),
                str(uuid.uuid4())[:24],
                k.action(cid, ""),
            ],
        )
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(
                f"conversation {cid} is {result[1]}; only calls waiting for confirmation "
                "can be rejected"
            )
        return int(result[1])

    def recent_events(self, conversation_id: str, count: int) -> list[Event]:
        """The newest ``count`` events, oldest first: O(count), whatever the history."""
        entries = self._call(
            lambda: self.redis.xrevrange(self.keys.events(conversation_id), count=count)
        )
        return [event_from_entry(entry_id, fields) for entry_id, fields in reversed(entries)]

    def first_user_message(self, conversation_id: str) -> MessageEvent | None:
        """The conversation's first user message (its task), by the seq its
        ``send_message`` recorded: one entry read, whatever the history."""
        k = self.keys
        seq = self._call(lambda: self.redis.hget(k.agent(conversation_id), "first_message_seq"))
        if not seq:
            return None
        entries = self._call(
            lambda: self.redis.xrange(k.events(conversation_id), f"{seq}-0", f"{seq}-0")
        )
        for entry_id, fields in entries:
            event = event_from_entry(entry_id, fields)
            if isinstance(event, MessageEvent):
                return event
        return None
