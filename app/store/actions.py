"""ActionStore: the only code that talks to Redis (with ``actionq.store.leases`` and
``actionq.store.client``, its other two parts).

Every state change is one Lua script (see ``app/store/lua/``), so an action's state,
its event and the conversation move together or not at all. Reads are plain
commands. Redis errors are translated to ``StoreUnavailableError`` here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.client import Pipeline

from actionq.errors import (
    ActionNotFound,
    ConversationNotFound,
    DuplicateToolCallId,
    IdempotencyConflict,
    InvalidTransition,
    QuarantinedAction,
    RetryInProgress,
)
from actionq.models import (
    ActionEvent,
    ActionRecord,
    ActionState,
    AgentErrorEvent,
    Conversation,
    ConversationStatus,
    Event,
    EventPage,
    event_adapter,
    new_id,
    utc_now,
)
from actionq.store.leases import WorkerLeases
from actionq.store.records import (
    Claim,
    ClaimRefused,
    FinishResult,
    QueuedMessage,
    StopOutcome,
    SubmitResult,
    WorkerIdentity,
    action_from_hash,
    canonical_json,
    conversation_from_hash,
    fingerprint,
)

if TYPE_CHECKING:
    from actionq.tools.sandbox import ProcessGroup

__all__ = [
    "ActionStore",
    "Claim",
    "ClaimRefused",
    "FinishResult",
    "StopOutcome",
    "SubmitResult",
    "WorkerIdentity",
    "fingerprint",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _NewAction:
    """A call about to be stored (by submit or retry)."""

    conversation_id: str
    event: ActionEvent
    arguments: dict[str, Any]
    arguments_json: str
    fingerprint: str
    idempotency_key: str


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
        arguments_json: str | None = None,
        action_id: str | None = None,
        message: QueuedMessage | None = None,
    ) -> SubmitResult:
        """Append the ActionEvent and store the action as pending, in one step.

        ``action_id`` is minted by the caller (the facade builds the message
        with it). With ``self.broker`` set and ``message`` given, the message
        is pushed by this same step when the action may run now, else kept
        until its turn (``SubmitResult.pushed``).
        """
        new = self._new_action(
            conversation_id,
            tool,
            arguments,
            action_id=action_id,
            tool_call_id=tool_call_id,
            idempotency_key=idempotency_key,
            thought=thought,
            arguments_json=arguments_json,
        )
        result = self._store_new_action(new, "submit_action", [], [], message)
        if result[0] == "existing":
            return SubmitResult(result[1], False, None)
        if result[0] == "idempotency_conflict":
            raise IdempotencyConflict(
                f"idempotency_key {idempotency_key!r} is already used by action {result[1]} "
                f"with another call (tool or arguments differ) in conversation {conversation_id}"
            )
        if result[0] == "duplicate_tool_call":
            raise DuplicateToolCallId(
                f"tool_call_id {new.event.tool_call_id!r} is already used by action "
                f"{result[1]} in conversation {conversation_id}"
            )
        return self._created(new, result)

    def retry_action(
        self,
        original: ActionRecord,
        *,
        quarantine_threshold: int,
        force: bool = False,
        action_id: str | None = None,
        message: QueuedMessage | None = None,
    ) -> SubmitResult:
        """Store a new action with ``original``'s call (``retry_of`` set), in one
        step that first checks the original ended, that the call is not
        quarantined (unless ``force``) and that no earlier retry of the same
        call is unfinished; a refused retry stores nothing. A conversation in
        ``error`` is resumed by the same step, so the retry runs."""
        k = self.keys
        cid = original.conversation_id
        new = self._new_action(
            cid,
            original.tool,
            original.arguments,
            action_id=action_id,
            retry_of=original.id,
        )
        result = self._store_new_action(
            new,
            "retry_action",
            [k.action(cid, original.id), k.crashes(cid), k.retries(cid)],
            [quarantine_threshold, "1" if force else "0", k.action(cid, "")],
            message,
        )
        if result[0] == "not_ended":
            raise InvalidTransition(f"action {original.id} has not ended ({result[1]})")
        if result[0] == "quarantined":
            raise QuarantinedAction(
                f"{original.tool} with these arguments crashed {result[1]} time(s) in this "
                f"conversation (quarantine threshold {quarantine_threshold}); it is likely "
                "to crash again: retry with force=True (CLI `--force`, HTTP "
                '{"force": true}) to run it anyway'
            )
        if result[0] == "retry_in_progress":
            raise RetryInProgress(
                f"a retry of this call is still unfinished (action {result[1]}); "
                "wait for its outcome before retrying again"
            )
        return self._created(new, result)

    def _new_action(
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
        action_id: str | None = None,
    ) -> _NewAction:
        action_id = action_id or new_id()
        event = ActionEvent(
            id=action_id,
            tool_name=tool,
            tool_call_id=tool_call_id or f"call_{action_id.replace('-', '')}",
            action=arguments,
            thought=thought,
            retry_of=retry_of,
        )
        # Serialized once: stored as is, and hashed for the fingerprint.
        arguments_json = canonical_json(arguments) if arguments_json is None else arguments_json
        return _NewAction(
            conversation_id=conversation_id,
            event=event,
            arguments=arguments,
            arguments_json=arguments_json,
            fingerprint=fingerprint(tool, arguments, arguments_json),
            idempotency_key=idempotency_key or "",
        )

    def _store_new_action(
        self,
        new: _NewAction,
        script: str,
        extra_keys: list[str],
        extra_args: list[Any],
        message: QueuedMessage | None,
    ) -> Any:
        """Run ``script`` (submit_action or retry_action) for ``new``, with the
        global action index entry in the same round trip (removed again if
        the script stored nothing)."""
        k = self.keys
        cid = new.conversation_id
        event = new.event
        keys = [
            k.conversation(cid),
            k.events(cid),
            k.queue(cid),
            k.actions(cid),
            k.idempotency(cid),
            k.tool_calls(cid),
            k.action(cid, event.id),
            *extra_keys,
        ]
        args = [
            event.id,
            new.idempotency_key,
            event.tool_call_id,
            event.model_dump_json(exclude={"seq"}),
            event.timestamp,
            new_id(),
            event.tool_name,
            new.arguments_json,
            new.fingerprint,
            event.retry_of or "",
            *extra_args,
        ]
        if self.broker is not None and message is not None:
            keys.append(self.broker.queue_key)
            args += [message.task, self.broker.sent_event_channel, message.sent_event]

        def build(pipe: Pipeline) -> None:
            pipe.hset(k.action_index(), event.id, cid)
            self.evalsha_in(pipe, script, keys, args)

        _, result = self._pipelined(build)
        if result[0] != "created":
            self._call(lambda: self.redis.hdel(k.action_index(), event.id))
        if result[0] == "no_conversation":
            raise ConversationNotFound(f"no conversation {cid!r}")
        return result

    def _created(self, new: _NewAction, result: Any) -> SubmitResult:
        event = new.event
        record = ActionRecord(
            id=event.id,
            conversation_id=new.conversation_id,
            state=ActionState.PENDING,
            tool=event.tool_name,
            arguments=new.arguments,
            tool_call_id=event.tool_call_id,
            fingerprint=new.fingerprint,
            created_at=event.timestamp,
            retry_of=event.retry_of,
        )
        return SubmitResult(event.id, True, result[2] or None, record, bool(result[3]))

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
        self._call(
            lambda: self.redis.hset(
                key,
                mapping={
                    "pgid": pgid,
                    "pgid_start": start,
                    "boot_id": boot,
                    "cgroup": cgroup,
                },
            )
        )

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
        ]
        result = self._script("stop_conversation", keys, args)
        return StopOutcome(result[0])

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
