"""Plain records the store returns, and converters from Redis hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from actionq.models import (
    ActionRecord,
    ActionState,
    Conversation,
    ConversationError,
    ConversationStatus,
    Event,
    event_adapter,
)

__all__ = [
    "BrokerList",
    "Claim",
    "ClaimRefused",
    "ConversationExport",
    "FinishResult",
    "QueuedMessage",
    "RunResult",
    "StopOutcome",
    "SubmitResult",
    "WorkerIdentity",
    "action_from_hash",
    "canonical_json",
    "conversation_from_hash",
    "event_from_entry",
    "event_from_stored",
    "fingerprint",
]


def canonical_json(arguments: dict[str, Any]) -> str:
    """Arguments as compact JSON with sorted keys: stored once, and hashed."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(tool: str, arguments: dict[str, Any], canonical: str | None = None) -> str:
    """Tool + canonical JSON arguments: the identity of 'the same call'."""
    canonical = canonical_json(arguments) if canonical is None else canonical
    return hashlib.sha256(f"{tool}\n{canonical}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class WorkerIdentity:
    """Who holds a claim: one Celery worker (its main process) and its host."""

    id: str
    host: str
    pid: int


@dataclass(frozen=True)
class SubmitResult:
    action_id: str
    created: bool  # False: an existing action was returned for the idempotency key
    dispatch_action_id: str | None  # an action that must now be sent to a worker
    record: ActionRecord | None = None  # the new action as stored (when created)
    pushed: bool = False  # the store pushed dispatch_action_id's message itself


@dataclass(frozen=True)
class BrokerList:
    """Where store transitions push Celery messages under direct enqueue
    (actionq.messaging.direct_enqueue): the Redis list the worker reads (a
    queue at the default priority is a list named after the queue), and the
    pub/sub channel of ``task-sent`` events ('' = events off)."""

    queue_key: str
    sent_event_channel: str
    step_queue_key: str = ""  # the agent steps' queue (actionq.tasks.agent_step)


@dataclass(frozen=True)
class QueuedMessage:
    """One action's Celery task message and its ``task-sent`` event ('' =
    none), as the strings the Redis transport stores and publishes; built by
    actionq.messaging, pushed by the store's scripts."""

    task: str
    sent_event: str


class StopOutcome(StrEnum):
    """What ``ActionStore.stop_conversation`` did."""

    OK = "ok"  # the target ended, the conversation stopped
    ENDED = "ended"  # the target had already finished: nothing written
    STALE = "stale"  # its fence moved on (a newer claim): nothing written
    MOVED = "moved"  # its state changed since it was read: read again


@dataclass(frozen=True)
class Claim:
    """A successful claim: the caller may run the tool, then finish with ``fence``."""

    action_id: str
    conversation_id: str
    fence: int
    attempt: int
    tool: str
    arguments: dict[str, Any]
    tool_call_id: str


@dataclass(frozen=True)
class ClaimRefused:
    """The action must not run. ``reason``: missing, not_dispatched or not_pending."""

    reason: str
    attempt: int = 0
    state: ActionState | None = None
    owner: str | None = None
    fence: int | None = None


@dataclass(frozen=True)
class FinishResult:
    appended: bool  # False: stale token or already finished; nothing was written
    next_action_id: str | None = None
    pushed: bool = False  # the store pushed next_action_id's message itself
    step_task_id: str | None = None  # an agent step queued by this finish
    step_pushed: bool = False  # ... and its message pushed by the store itself


@dataclass(frozen=True)
class RunResult:
    """What a transition that may start work left to send: an action, or an
    agent step (by task id), each unless the store pushed its message itself."""

    status: ConversationStatus
    dispatch_action_id: str | None = None
    pushed: bool = False
    step_task_id: str | None = None
    step_pushed: bool = False

    @classmethod
    def from_script(cls, status: str, rest: list[Any]) -> RunResult:
        return cls(
            ConversationStatus(status),
            str(rest[0]) or None,
            bool(int(rest[1])),
            str(rest[2]) or None,
            bool(int(rest[3])),
        )


def event_from_entry(entry_id: str, fields: dict[str, str]) -> Event:
    """An event from its stream entry: the JSON in field ``e``, ``seq`` from the id."""
    return event_from_stored(fields["e"], int(entry_id.split("-", 1)[0]))


def event_from_stored(stored: str, seq: int) -> Event:
    """An event from its stored JSON (which has no ``seq``) and its seq."""
    event = event_adapter.validate_json(stored)
    event.seq = seq
    return event


def conversation_from_hash(
    raw: dict[str, str], queued: int, pending_confirmation: int = 0
) -> Conversation:
    return Conversation(
        id=raw["id"],
        status=ConversationStatus(raw["status"]),
        created_at=raw["created_at"],
        updated_at=raw["updated_at"],
        last_seq=int(raw.get("last_seq", 0)),
        active_action_id=raw.get("active") or None,
        queued_actions=queued,
        agent=raw.get("agent") == "1",
        iteration=int(raw.get("iteration") or 0),
        pending_confirmation=pending_confirmation,
        error=ConversationError.model_validate_json(raw["error"]) if raw.get("error") else None,
    )


def action_from_hash(raw: dict[str, str]) -> ActionRecord:
    def opt_float(name: str) -> float | None:
        value = raw.get(name)
        return float(value) if value else None

    pid = raw.get("pid")
    return ActionRecord(
        id=raw["id"],
        conversation_id=raw["conversation_id"],
        state=ActionState(raw["state"]),
        tool=raw["tool"],
        arguments=json.loads(raw["arguments"]),
        tool_call_id=raw["tool_call_id"],
        fingerprint=raw["fingerprint"],
        created_at=raw["created_at"],
        attempt=int(raw.get("attempt", 0)),
        fence=int(raw.get("fence", 0)),
        owner=raw.get("owner") or None,
        host=raw.get("host") or None,
        pid=int(pid) if pid else None,
        claimed_at=opt_float("claimed_at"),
        finished_at=opt_float("finished_at"),
        terminal_kind=raw.get("terminal_kind") or None,
        retry_of=raw.get("retry_of") or None,
        pgid=int(raw["pgid"]) if raw.get("pgid") else None,
        pgid_start=int(raw["pgid_start"]) if raw.get("pgid_start") else None,
        boot_id=raw.get("boot_id") or None,
        cgroup=raw.get("cgroup") or None,
        memory_cgroup=raw.get("memory_cgroup") or None,
    )


@dataclass(frozen=True)
class ConversationExport:
    """A conversation as archival copies it out of Redis: its record, its
    agent (spec and policy JSON as stored, None without), every event as
    stored (``seq``, the JSON without seq) and every action's record, in
    submission order. ``status``, ``last_seq`` and
    ``updated_at`` are the hash's own strings, which the removal compares so
    that a conversation changed after the export is not removed."""

    conversation: Conversation
    agent_spec_json: str | None
    policy_json: str | None
    events: list[tuple[int, str]]
    actions: list[ActionRecord]
    status: str
    last_seq: str
    updated_at: str
