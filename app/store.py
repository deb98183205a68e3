"""ActionStore: the only code that talks to Redis (with ``app.leases`` and
``app.redis_store``, its other two parts).

Every state change is one Lua script (see ``app/lua/``), so an action's state,
its event and the conversation move together or not at all. Reads are plain
commands. Redis errors are translated to ``StoreUnavailableError`` here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from redis.client import Pipeline

from app.errors import (
    ActionNotFound,
    ConversationNotFound,
    DuplicateToolCallId,
    IdempotencyConflict,
    InvalidTransition,
    StoreUnavailableError,
)
from app.leases import WorkerLeases
from app.models import (
    ActionEvent,
    ActionRecord,
    ActionState,
    Conversation,
    ConversationStatus,
    Event,
    EventPage,
    event_adapter,
    new_id,
    utc_now,
)
from app.records import (
    Claim,
    ClaimRefused,
    FinishResult,
    SubmitResult,
    WorkerIdentity,
    action_from_hash,
    canonical_json,
    conversation_from_hash,
    fingerprint,
)

if TYPE_CHECKING:
    from app.direct_enqueue import QueuedMessage

__all__ = [
    "ActionStore",
    "Claim",
    "ClaimRefused",
    "FinishResult",
    "SubmitResult",
    "WorkerIdentity",
    "fingerprint",
]

log = logging.getLogger(__name__)

_STOP_RETRIES = 20


class ActionStore(WorkerLeases):
    """Conversations, actions and events in Redis (worker leases: ``WorkerLeases``)."""

    # ------------------------------------------------------------------ conversations
    def create_conversation(self, conversation_id: str | None = None) -> Conversation:
        return self.create_conversation_checked(conversation_id)[0]

    def create_conversation_checked(
        self, conversation_id: str | None = None
    ) -> tuple[Conversation, bool]:
        """The conversation, and whether this call created it (False: it existed)."""
        cid = conversation_id or new_id()
        now = utc_now()
        # Index first: a conversation may be listed a moment before it exists,
        # never exist without being found by start-up recovery.
        self._call(
            lambda: self.redis.zadd(self.keys.conversation_index(), {cid: time.time()}, nx=True)
        )
        created = self._script("create_conversation", [self.keys.conversation(cid)], [cid, now])
        return self.get_conversation(cid), bool(created)

    def get_conversation(self, conversation_id: str) -> Conversation:
        raw = self._call(lambda: self.redis.hgetall(self.keys.conversation(conversation_id)))
        if not raw:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        queued = self._call(lambda: self.redis.llen(self.keys.queue(conversation_id)))
        return conversation_from_hash(raw, queued)

    def list_conversation_ids(self, offset: int = 0, limit: int = 100) -> list[str]:
        ids = self._call(
            lambda: self.redis.zrange(self.keys.conversation_index(), offset, offset + limit - 1)
        )
        return [str(i) for i in ids]

    def count_conversations(self) -> int:
        return int(self._call(lambda: self.redis.zcard(self.keys.conversation_index())))

    def iter_conversation_ids(self, batch: int = 500) -> Iterator[str]:
        offset = 0
        while True:
            ids = self.list_conversation_ids(offset, batch)
            yield from ids
            if len(ids) < batch:
                return
            offset += batch

    # ------------------------------------------------------------------ actions
    def submit_action(
        self,
        conversation_id: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        tool_call_id: str | None = None,
        idempotency_key: str | None = None,
        thought: str = "",
        retry_of: str | None = None,
        arguments_json: str | None = None,
        message: Callable[[str], QueuedMessage] | None = None,
    ) -> SubmitResult:
        """Append the ActionEvent and store the action as pending, in one step.

        With ``self.broker`` set and ``message`` given, ``message(action_id)``
        is the action's Celery message, pushed by this same step when the
        action may run now, else kept until its turn (``SubmitResult.pushed``).
        """
        action_id = new_id()
        event = ActionEvent(
            id=action_id,
            tool_name=tool,
            tool_call_id=tool_call_id or f"call_{action_id.replace('-', '')}",
            action=arguments,
            thought=thought,
            retry_of=retry_of,
        )
        k = self.keys
        cid = conversation_id
        # Serialized once: stored as is, and hashed for the fingerprint.
        arguments_json = canonical_json(arguments) if arguments_json is None else arguments_json
        action_fingerprint = fingerprint(tool, arguments, arguments_json)
        # One round trip: the global action index entry, then the transition.
        submit_keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.actions(cid),
            k.idempotency(cid),
            k.tool_calls(cid),
            k.action(cid, action_id),
        ]
        submit_args = [
            action_id,
            idempotency_key or "",
            event.tool_call_id,
            event.model_dump_json(exclude={"seq"}),
            event.timestamp,
            new_id(),
            tool,
            arguments_json,
            action_fingerprint,
            retry_of or "",
        ]
        if self.broker is not None and message is not None:
            queued = message(action_id)
            submit_keys.append(self.broker.queue_key)
            submit_args += [queued.task, self.broker.sent_event_channel, queued.sent_event]

        def build(pipe: Pipeline) -> None:
            pipe.hset(k.action_index(), action_id, cid)
            self.evalsha_in(pipe, "submit_action", submit_keys, submit_args)

        _, result = self._pipelined(build)
        outcome = result[0]
        if outcome == "created":
            record = ActionRecord(
                id=action_id,
                conversation_id=cid,
                state=ActionState.PENDING,
                tool=tool,
                arguments=arguments,
                tool_call_id=event.tool_call_id,
                fingerprint=action_fingerprint,
                created_at=event.timestamp,
                retry_of=retry_of,
            )
            return SubmitResult(action_id, True, result[2] or None, record, bool(result[3]))
        self._call(lambda: self.redis.hdel(k.action_index(), action_id))
        if outcome == "existing":
            return SubmitResult(result[1], False, None)
        if outcome == "idempotency_conflict":
            raise IdempotencyConflict(
                f"idempotency_key {idempotency_key!r} is already used by action {result[1]} "
                f"with another call (tool or arguments differ) in conversation {cid}"
            )
        if outcome == "duplicate_tool_call":
            raise DuplicateToolCallId(
                f"tool_call_id {event.tool_call_id!r} is already used by action {result[1]} "
                f"in conversation {cid}"
            )
        raise ConversationNotFound(f"no conversation {cid!r}")

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

    def record_process_group(self, conversation_id: str, action_id: str, pgid: int) -> None:
        """Remember the process group of a command the action started."""
        key = self.keys.action(conversation_id, action_id)
        self._call(lambda: self.redis.hset(key, "pgid", pgid))

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
        ]

        finish_keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.action(cid, claim.action_id),
        ]
        if self.broker is not None:
            finish_keys.append(self.broker.queue_key)
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
        return FinishResult(True, result[2] or None, bool(result[3]))

    def stop_conversation(
        self,
        conversation_id: str,
        new_status: ConversationStatus,
        *,
        target_action_id: str,
        target_event: Callable[[ActionRecord], Event],
        expected_fence: int | None = None,
        drop_queue: bool,
        target_state: ActionState = ActionState.ERRORED,
        count_crash: bool = False,
        queued_event: Callable[[ActionRecord], Event] | None = None,
        target_states: tuple[ActionState, ...] = (ActionState.PENDING, ActionState.CLAIMED),
    ) -> bool:
        """Give the target action (and, with ``drop_queue``, every action queued
        behind it) its terminal event and set the conversation status, atomically.

        Returns False (and writes nothing) if the target is already finished or
        its fencing token moved on. Safe to call twice for one failure.
        """
        k = self.keys
        cid = conversation_id
        for _ in range(_STOP_RETRIES):
            conv = self._call(lambda: self.redis.hmget(k.conversation(cid), "active", "status"))
            active = conv[0] or ""
            queue = self._call(lambda: self.redis.lrange(k.queue(cid), 0, -1))
            try:
                target = self.get_action(target_action_id, cid)
            except ActionNotFound:
                return False
            if target.state not in target_states:
                return False
            if expected_fence is not None and target.fence != expected_fence:
                return False
            listed: list[tuple[ActionRecord, Event, ActionState, str]] = [
                (
                    target,
                    target_event(target),
                    target_state,
                    target.fingerprint if count_crash else "",
                )
            ]
            if drop_queue and queued_event is not None:
                for queued_id in queue:
                    if queued_id == target.id:
                        continue
                    try:
                        queued = self.get_action(queued_id, cid)
                    except ActionNotFound:  # its hash was deleted by hand
                        continue
                    if queued.state == ActionState.PENDING:
                        listed.append((queued, queued_event(queued), ActionState.ERRORED, ""))
            args: list[Any] = [
                utc_now(),
                time.time(),
                new_id(),
                new_status.value,
                active,
                ",".join(queue),
                "1" if drop_queue else "0",
            ]
            for record, event, state, crash_fp in listed:
                fence = (
                    str(expected_fence) if record is target and expected_fence is not None else ""
                )
                args += [
                    record.id,
                    "," + ",".join(st.value for st in target_states) + ","
                    if record is target
                    else ",pending,",
                    fence,
                    state.value,
                    event.model_dump_json(exclude={"seq"}),
                    event.kind,
                    crash_fp,
                ]
            keys = [k.conversation(cid), k.events(cid), k.queue(cid), k.crashes(cid)]
            keys += [k.action(cid, record.id) for record, *_ in listed]
            result = self._script("stop_conversation", keys, args)
            if result[0] == "ok":
                return True
            log.debug("stop_conversation %s: state moved (%s); reading again", cid, result[1])
        raise StoreUnavailableError(
            f"conversation {cid} kept changing; could not stop it after {_STOP_RETRIES} tries"
        )

    def resume_conversation(self, conversation_id: str) -> str | None:
        """error|paused -> running (or idle if nothing is queued).

        Returns the action that must now be sent with Celery, if any (with
        direct enqueue its kept message is pushed by this same step). Raises
        ``InvalidTransition`` when the conversation is not in error or paused,
        so two concurrent resumes cannot both succeed.
        """
        k = self.keys
        cid = conversation_id
        keys = [k.conversation(cid), k.events(cid), k.queue(cid)]
        args = [utc_now(), new_id()]
        if self.broker is not None:
            keys.append(self.broker.queue_key)
            args.append(self.broker.sent_event_channel)
        result = self._script("resume_conversation", keys, args)
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(
                f"conversation {cid} is {result[1]}; only a conversation in error or paused "
                "can be resumed"
            )
        return None if int(result[3]) else (str(result[2]) or None)

    def pause_conversation(self, conversation_id: str) -> str | None:
        """-> paused (nothing new is dispatched). Returns the active action id.

        Raises ``InvalidTransition`` for a conversation in error (resume it first).
        """
        k = self.keys
        cid = conversation_id
        result = self._script(
            "pause_conversation", [k.conversation(cid), k.events(cid)], [utc_now(), new_id()]
        )
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        if result[0] == "refused":
            raise InvalidTransition(f"conversation {cid} is {result[1]}; it cannot be paused")
        return str(result[1]) or None

    # ------------------------------------------------------------------ events
    def list_events(self, conversation_id: str, after_seq: int = 0, limit: int = 100) -> EventPage:
        """Events with seq > after_seq, at most ``limit``: O(limit), not O(history)."""
        if not self._call(lambda: self.redis.exists(self.keys.conversation(conversation_id))):
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        entries = self._call(
            lambda: self.redis.xrange(
                self.keys.events(conversation_id), min=f"{after_seq + 1}-0", count=limit
            )
        )
        items: list[Event] = []
        for entry_id, fields in entries:
            event = event_adapter.validate_json(fields["e"])
            event.seq = int(entry_id.split("-", 1)[0])
            items.append(event)
        next_after = items[-1].seq if len(items) == limit else None
        return EventPage(items=items, next_after_seq=next_after)

    def all_events(self, conversation_id: str) -> list[Event]:
        events: list[Event] = []
        after = 0
        while True:
            page = self.list_events(conversation_id, after, 1000)
            events += page.items
            if page.next_after_seq is None:
                return events
            after = page.next_after_seq
