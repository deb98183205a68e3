"""``ActionStore``: the whole store, and the life of a stored action after
it was submitted: claim, finish, stop (a crash or a cancellation), reads.

Its other parts: ``SubmitStore`` (actionq.store.submit), ``ConversationStore``
(actionq.store.conversations), ``WorkerLeases`` (actionq.store.leases), all on
``RedisStore`` (actionq.store.client: the client, the Lua scripts, error
translation). Every state change is one Lua script (app/store/lua/), so an
action's state, its event and the conversation move together or not at all.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.client import Pipeline

from actionq.errors import (
    ActionNotFound,
)
from actionq.models import (
    ActionRecord,
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    Event,
    new_id,
    utc_now,
)
from actionq.store.agent import STEP_CLAIM, AgentStore
from actionq.store.conversations import ConversationStore
from actionq.store.leases import WorkerLeases
from actionq.store.records import (
    Claim,
    ClaimRefused,
    FinishResult,
    StopOutcome,
    WorkerIdentity,
    action_from_hash,
)
from actionq.store.submit import SubmitStore

if TYPE_CHECKING:
    from actionq.tools.sandbox import ProcessGroup

__all__ = ["ActionStore"]

log = logging.getLogger(__name__)


class ActionStore(SubmitStore, AgentStore, ConversationStore, WorkerLeases):
    """Conversations, actions and events in Redis (worker leases: ``WorkerLeases``)."""

    def conversation_of_action(self, action_id: str) -> str:
        cid = self._call(lambda: self.redis.hget(self.keys.action_index(), action_id))
        if not cid:
            raise ActionNotFound(f"no action {action_id!r}")
        return str(cid)

    def get_action(self, action_id: str, conversation_id: str | None = None) -> ActionRecord:
        cid = conversation_id or self.conversation_of_action(action_id)
        raw = self._call(lambda: self.redis.hgetall(self.keys.action(cid, action_id)))
        if not raw:
            raise ActionNotFound(f"no action {action_id!r} in conversation {cid!r}")
        return action_from_hash(raw)

    def list_action_ids(self, conversation_id: str) -> list[str]:
        return list(
            self._call(lambda: self.redis.lrange(self.keys.actions(conversation_id), 0, -1))
        )

    def crash_count(self, conversation_id: str, action_fingerprint: str) -> int:
        raw = self._call(
            lambda: self.redis.hget(self.keys.crashes(conversation_id), action_fingerprint)
        )
        return int(raw or 0)

    def claim_action(
        self, conversation_id: str, action_id: str, worker: WorkerIdentity
    ) -> Claim | ClaimRefused:
        """pending -> claimed, owned by ``worker``. Only a Claim may run the tool."""
        k = self.keys
        cid = conversation_id
        claim_ref = f"{cid}/{action_id}"

        # The claim index entry goes in before the claim and out after the
        # finish, so a sweeper never misses a claim of a dead worker.
        def build(pipe: Pipeline) -> None:
            pipe.sadd(k.worker_claims(worker.id), claim_ref)
            self.evalsha_in(
                pipe,
                "claim_action",
                [k.conversation(cid), k.action(cid, action_id)],
                [action_id, worker.id, worker.host, worker.pid],
            )

        _, result = self._pipelined(build)
        if result[0] == "claimed":
            return Claim(
                action_id=action_id,
                conversation_id=cid,
                fence=int(result[1]),
                attempt=int(result[2]),
                tool=result[3],
                arguments=json.loads(result[4]),
                tool_call_id=result[5],
            )
        # A delivery of an action this very worker holds (the broker handed
        # its message out again, e.g. after a Redis outage) must keep the
        # entry: it is the claim's own, and the claim audit needs it.
        holds_it = result[0] == "not_pending" and result[2] == worker.id
        if not holds_it:
            self._call(lambda: self.redis.srem(k.worker_claims(worker.id), claim_ref))
        if result[0] == "not_pending":
            return ClaimRefused(
                "not_pending",
                attempt=int(result[4]),
                state=ActionState(result[1]),
                owner=result[2] or None,
                fence=int(result[3]),
            )
        if result[0] == "not_dispatched":
            return ClaimRefused("not_dispatched", attempt=int(result[1]))
        return ClaimRefused("missing")

    def count_lost_delivery(self, conversation_id: str, action_id: str) -> int:
        """Count a delivery whose process died before it claimed the action."""
        key = self.keys.action(conversation_id, action_id)
        return int(self._call(lambda: self.redis.hincrby(key, "lost_deliveries", 1)))

    def _resend_counter(self, conversation_id: str, target: str) -> tuple[str, str]:
        """Where the re-sends of ``target`` are counted: the agent hash for
        its step (``STEP_CLAIM``), else the action's hash."""
        if target == STEP_CLAIM:
            return self.keys.agent(conversation_id), "step_resends"
        return self.keys.action(conversation_id, target), "resends"

    def count_resend(self, conversation_id: str, target: str, seen: int) -> bool:
        """Count one more re-send of the conversation's turn (``target``: the
        active action's id, or ``STEP_CLAIM`` for its agent step), if it has
        been re-sent ``seen`` times so far; False if another sweeper counted
        it meanwhile (then that one sends it)."""
        key, name = self._resend_counter(conversation_id, target)
        return int(self._call(lambda: self.redis.hincrby(key, name, 1))) == seen + 1

    def resends(self, conversation_id: str, target: str) -> int:
        """How often ``count_resend`` counted ``target`` (see there)."""
        key, name = self._resend_counter(conversation_id, target)
        return int(self._call(lambda: self.redis.hget(key, name)) or 0)

    def running_conversation_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` of the conversations whose status is running, oldest first."""
        index = self.keys.status_index(ConversationStatus.RUNNING.value)
        return [str(cid) for cid in self._call(lambda: self.redis.zrange(index, 0, limit - 1))]

    def record_process_group(
        self, conversation_id: str, action_id: str, group: ProcessGroup
    ) -> None:
        """Remember the process group (and cgroup) of a command the action
        started, with its leader's start time and the boot, so that a later
        kill can tell it from a process that reuses the pid."""
        key = self.keys.action(conversation_id, action_id)
        pgid = "" if group.pgid is None else group.pgid
        start = "" if group.start_ticks is None else group.start_ticks
        boot, cgroup = group.boot_id or "", group.cgroup or ""
        memory_cgroup = group.memory_cgroup or ""
        self._call(
            lambda: self.redis.hset(
                key,
                mapping={
                    "pgid": pgid,
                    "pgid_start": start,
                    "boot_id": boot,
                    "cgroup": cgroup,
                    "memory_cgroup": memory_cgroup,
                },
            )
        )

    def publish_output_tail(
        self, conversation_id: str, action_id: str, tail: str, ttl_seconds: int
    ) -> None:
        """The running command's last output (best effort, for a sweeper elsewhere)."""
        key = self.keys.output_tail(conversation_id, action_id)
        self._call(lambda: self.redis.set(key, tail, ex=ttl_seconds))

    def output_tail(self, conversation_id: str, action_id: str) -> str | None:
        key = self.keys.output_tail(conversation_id, action_id)
        raw = self._call(lambda: self.redis.get(key))
        return None if raw is None else str(raw)

    def forget_output_tail(self, conversation_id: str, action_id: str) -> None:
        key = self.keys.output_tail(conversation_id, action_id)
        self._call(lambda: self.redis.delete(key))

    def finish_action(
        self,
        claim: Claim,
        event: Event,
        worker: WorkerIdentity,
        state: ActionState = ActionState.DONE,
        quiet_status: ConversationStatus = ConversationStatus.IDLE,
    ) -> FinishResult:
        """claimed -> done with ``event``, only if ``claim.fence`` is still current.

        If nothing is queued the conversation becomes ``quiet_status``."""
        k = self.keys
        cid = claim.conversation_id
        now_iso = utc_now()
        finish_args = [
            claim.action_id,
            claim.fence,
            state.value,
            event.model_dump_json(exclude={"seq"}),
            now_iso,
            time.time(),
            new_id(),
            event.kind,
            quiet_status.value,
            k.action(cid, ""),
        ]

        finish_keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.action(cid, claim.action_id),
            k.agent(cid),
        ]
        if self.broker is not None:
            finish_keys += [self.broker.queue_key, self.broker.step_queue_key]
            finish_args.append(self.broker.sent_event_channel)

        def build(pipe: Pipeline) -> None:
            self.evalsha_in(pipe, "finish_action", finish_keys, finish_args)
            pipe.srem(k.worker_claims(worker.id), f"{cid}/{claim.action_id}")

        result, _ = self._pipelined(build)
        if result[0] != "ok":
            log.warning(
                "dropped late result of action %s (conversation %s, fence %s): action is %s",
                claim.action_id,
                cid,
                claim.fence,
                result[1],
            )
            return FinishResult(False)
        return FinishResult(
            True, result[2] or None, bool(result[3]), result[4] or None, bool(result[5])
        )

    def stop_conversation(
        self,
        target: ActionRecord,
        event: Event,
        new_status: ConversationStatus,
        *,
        new_state: ActionState,
        expected_fence: int | None = None,
        count_crash: bool = False,
        not_run_template: AgentErrorEvent | None = None,
    ) -> StopOutcome:
        """Give ``target`` (as the caller read it) its terminal ``event`` and set
        the conversation to ``new_status``, in one script. With
        ``not_run_template`` every action queued behind it ends too, with that
        event filled in for each (inside the script: one round trip whatever
        the length of the queue).

        ``StopOutcome.MOVED``: the target's state changed since it was read;
        read it again and rebuild the event. ``ENDED``/``STALE``: it already
        finished, or its fence moved on; nothing was written.
        """
        k = self.keys
        cid = target.conversation_id
        not_run_json = ""
        if not_run_template is not None:
            same_time = not_run_template.model_copy(update={"timestamp": event.timestamp})
            not_run_json = same_time.model_dump_json(exclude={"seq"})
        args: list[Any] = [
            utc_now(),
            time.time(),
            new_id(),
            new_status.value,
            target.id,
            target.state.value,
            "" if expected_fence is None else str(expected_fence),
            new_state.value,
            event.model_dump_json(exclude={"seq"}),
            event.kind,
            target.fingerprint if count_crash else "",
            "1" if not_run_template is not None else "0",
            not_run_json,
            new_id()[:24],
            k.action(cid, ""),
        ]
        keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.crashes(cid),
            k.action(cid, target.id),
            k.output_tail(cid, target.id),
        ]
        result = self._script("stop_conversation", keys, args)
        return StopOutcome(result[0])
