"""Storing a new action: submit, and retry (a new action with an ended one's
call). Each is one Lua script that appends the ActionEvent, stores the action
as pending and, if its conversation may run, makes it active and (direct
enqueue) pushes its Celery message, all at once; a refused call stores
nothing. ``SubmitStore`` is that part of ``ActionStore``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.client import Pipeline

from actionq.errors import (
    ConversationNotFound,
    DuplicateToolCallId,
    IdempotencyConflict,
    InvalidTransition,
    QuarantinedAction,
    RetryInProgress,
)
from actionq.models import ActionEvent, ActionRecord, ActionState, new_id
from actionq.store.client import RedisStore
from actionq.store.records import QueuedMessage, SubmitResult, canonical_json, fingerprint

__all__ = ["SubmitStore"]


@dataclass(frozen=True)
class _NewAction:
    """A call about to be stored (by submit or retry)."""

    conversation_id: str
    event: ActionEvent
    arguments: dict[str, Any]
    arguments_json: str
    fingerprint: str
    idempotency_key: str


class SubmitStore(RedisStore):
    """New actions: submit and retry."""

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
        prefix = self.keys.action(conversation_id, "")
        result = self._store_new_action(new, "submit_action", [], [prefix], message)
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
