"""Conversation, action and event models.

Events are one discriminated union on ``kind`` (the class name) with
OpenHands' field names, so an OpenHands client can read them. ``seq`` is a
per-conversation counter assigned by the store, contiguous from 1.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

__all__ = [
    "CONVERSATION_ID_MAX_LENGTH",
    "CONVERSATION_ID_PATTERN",
    "ActionEvent",
    "ActionRecord",
    "ActionState",
    "AgentErrorEvent",
    "Conversation",
    "ConversationError",
    "ConversationErrorEvent",
    "ConversationStateUpdateEvent",
    "ConversationStatus",
    "ErrorCause",
    "ErrorClassification",
    "ErrorDetail",
    "Event",
    "EventPage",
    "MessageEvent",
    "ObservationEvent",
    "UserRejectObservation",
    "conversation_id_problem",
    "event_adapter",
    "new_id",
    "utc_now",
    "validation_error_text",
]


# A conversation id names Redis keys, a URL path segment and the
# conversation's workspace folder (``<workspace root>/<id>``): alphanumeric
# first, so '.', '..' and '-x' (read as an option by the CLI) are impossible,
# and no '/', so it is always exactly one path component.
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
CONVERSATION_ID_MAX_LENGTH = 128
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)


def new_id() -> str:
    return str(uuid.uuid4())


def conversation_id_problem(conversation_id: str) -> str | None:
    """What is wrong with ``conversation_id`` (None: nothing)."""
    if not 1 <= len(conversation_id) <= CONVERSATION_ID_MAX_LENGTH:
        return f"conversation id must be 1 to {CONVERSATION_ID_MAX_LENGTH} characters long"
    # fullmatch: '$' alone would accept a trailing newline.
    if not _CONVERSATION_ID.fullmatch(conversation_id):
        return (
            f"conversation id {conversation_id!r} may hold only letters, digits, '_', '.' "
            "and '-', starting with a letter or digit"
        )
    return None


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def validation_error_text(error: ValidationError) -> str:
    """pydantic's message without its 'For further information visit <url>'
    lines: noise for the LLM that reads it in an error event."""
    lines = str(error).splitlines()
    return "\n".join(ln for ln in lines if not ln.strip().startswith("For further information"))


class ConversationStatus(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"
    FINISHED = "finished"
    ERROR = "error"
    STUCK = "stuck"


class ActionState(StrEnum):
    PENDING = "pending"  # stored, waiting for its turn or its worker
    CLAIMED = "claimed"  # a worker owns it and may be running the tool
    DONE = "done"  # ended normally (observation, or a tool-level error)
    ERRORED = "errored"  # crashed or abandoned; never re-run
    CANCELLED = "cancelled"  # stopped by the user


class ErrorCause(StrEnum):
    WORKER_LOST = "worker_lost"  # the pool child died (SIGKILL, OOM killer, segfault)
    TIME_LIMIT = "time_limit"  # hard time limit exceeded
    REDELIVERED = "redelivered"  # message came back; the claim's owner is dead
    LEASE_EXPIRED = "lease_expired"  # the claim's owner stopped heartbeating
    WORKER_SHUTDOWN = "worker_shutdown"  # cold shutdown cut the action off
    ABANDONED = "abandoned"  # its worker stopped running it without recording an outcome
    MEMORY_LIMIT = "memory_limit"  # its command was killed for memory (its cap, or the OOM killer)
    TOOL_EXCEPTION = "tool_exception"  # the tool raised; the agent may continue
    INVALID_ARGUMENTS = "invalid_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    CANCELLED = "cancelled"
    NOT_RUN = "not_run"  # queued behind an action that crashed; never started

    # Which of these are crashes, and what each leads to: actionq.crashes.causes.


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorClassification(_Model):
    """As OpenHands has it: what kind of error, and may the same call be tried again."""

    kind: str
    retryable: bool
    # OpenHands' user_action: what a person should do: nothing, retry, or fix settings.
    user_action: Literal["none", "retry", "settings"] = "none"


class ErrorDetail(_Model):
    cause: ErrorCause
    signal: int | None = None
    exitcode: int | None = None
    host: str | None = None
    pid: int | None = None
    attempt: int | None = None
    runtime_s: float | None = None
    # The most memory the action's command held (its cgroup's peak: resident
    # memory, page cache and kernel memory, what the cap counts), where it was
    # known to the process that wrote the event; None: not known.
    max_rss_bytes: int | None = None
    memory_limit_bytes: int | None = None  # the command's cap, read from its cgroup
    # What ended it, where that is known: its memory cap, or the kernel's OOM
    # killer (the machine, or an outer cgroup such as a container's, ran out).
    killed_by: Literal["memory_limit", "oom_killer"] | None = None
    # The last bytes (ACTIONQ_OUTPUT_TAIL_BYTES) a crashed `terminal` command
    # wrote, stdout and stderr as they interleaved, decoded utf-8 with
    # replacement; None: none was written, or none is known.
    output_tail: str | None = None


class _EventBase(_Model):
    id: str = Field(default_factory=new_id)
    timestamp: str = Field(default_factory=utc_now)
    source: Literal["agent", "user", "environment"]
    seq: int = 0


class LLMMessage(_Model):
    role: Literal["user", "assistant", "system", "tool"]
    content: str


class MessageEvent(_EventBase):
    kind: Literal["MessageEvent"] = "MessageEvent"
    llm_message: LLMMessage
    llm_response_id: str | None = None


class ActionEvent(_EventBase):
    """A tool call. Its ``id`` is the action id that the other events refer to."""

    kind: Literal["ActionEvent"] = "ActionEvent"
    source: Literal["agent", "user", "environment"] = "agent"
    tool_name: str
    tool_call_id: str
    action: dict[str, Any]
    thought: str = ""
    retry_of: str | None = None
    # The model response this call came from: the calls of one response share
    # it and are sent back to the model as one assistant message.
    llm_response_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_unused_pgid(cls, data: Any) -> Any:
        # Events stored by 0.1.0 carry "pgid": null, a field nothing ever set
        # (the process group is on the action record); they still read.
        if isinstance(data, dict) and "pgid" in data and data["pgid"] is None:
            return {name: value for name, value in data.items() if name != "pgid"}
        return data


class ObservationEvent(_EventBase):
    kind: Literal["ObservationEvent"] = "ObservationEvent"
    source: Literal["agent", "user", "environment"] = "environment"
    action_id: str
    tool_call_id: str
    tool_name: str
    observation: dict[str, Any]


class UserRejectObservation(_EventBase):
    kind: Literal["UserRejectObservation"] = "UserRejectObservation"
    source: Literal["agent", "user", "environment"] = "user"
    action_id: str
    tool_call_id: str
    tool_name: str
    rejection_reason: str


class AgentErrorEvent(_EventBase):
    kind: Literal["AgentErrorEvent"] = "AgentErrorEvent"
    source: Literal["agent", "user", "environment"] = "environment"
    error: str
    tool_name: str
    tool_call_id: str
    action_id: str
    classification: ErrorClassification
    detail: ErrorDetail


class ConversationStateUpdateEvent(_EventBase):
    kind: Literal["ConversationStateUpdateEvent"] = "ConversationStateUpdateEvent"
    source: Literal["agent", "user", "environment"] = "environment"
    key: str
    value: Any


class ConversationErrorEvent(_EventBase):
    """The run failed, not a tool call: the model could not answer, or a limit
    was reached (``code`` e.g. ``MaxIterationsReached``, ``RateLimitError``)."""

    kind: Literal["ConversationErrorEvent"] = "ConversationErrorEvent"
    source: Literal["agent", "user", "environment"] = "environment"
    code: str
    detail: str
    classification: ErrorClassification | None = None


Event = Annotated[
    MessageEvent
    | ActionEvent
    | ObservationEvent
    | UserRejectObservation
    | AgentErrorEvent
    | ConversationStateUpdateEvent
    | ConversationErrorEvent,
    Field(discriminator="kind"),
]
event_adapter: TypeAdapter[Event] = TypeAdapter(Event)

TERMINAL_EVENT_KINDS = frozenset({"ObservationEvent", "AgentErrorEvent", "UserRejectObservation"})


class EventPage(_Model):
    """One page of a conversation's events, like OpenHands' ``{items, next_page_id}``."""

    items: list[Event]
    next_after_seq: int | None


class ConversationError(_Model):
    """What put a conversation in ``error``, kept on it until it leaves error:
    the crash's cause, signal and exit code (its AgentErrorEvent's detail; for
    a failed agent run, the ConversationErrorEvent's ``code`` and no action),
    the action id and the event's timestamp."""

    cause: str | None = None
    signal: int | None = None
    exitcode: int | None = None
    action_id: str | None = None
    at: str | None = None


class Conversation(_Model):
    id: str
    status: ConversationStatus
    created_at: str
    updated_at: str
    last_seq: int = 0
    active_action_id: str | None = None
    queued_actions: int = 0
    # The agent loop (actionq.agent): whether the conversation has an agent, the
    # model steps of the current run, and the tool calls awaiting confirmation.
    agent: bool = False
    iteration: int = 0
    pending_confirmation: int = 0
    # Set while the status is error (ConversationError).
    error: ConversationError | None = None


class ActionRecord(_Model):
    """The stored state of one action (not an event: it changes as the action runs)."""

    id: str
    conversation_id: str
    state: ActionState
    tool: str
    arguments: dict[str, Any]
    tool_call_id: str
    fingerprint: str
    created_at: str
    attempt: int = 0  # how many times a message for it was delivered
    fence: int = 0
    owner: str | None = None  # worker id of the claim
    host: str | None = None
    pid: int | None = None
    claimed_at: float | None = None  # epoch seconds, Redis server time
    finished_at: float | None = None
    terminal_kind: str | None = None
    retry_of: str | None = None
    pgid: int | None = None  # process group of a command it started
    pgid_start: int | None = None  # its leader's start (clock ticks since boot)
    boot_id: str | None = None  # the boot it started in
    cgroup: str | None = None  # cgroup v2 directory holding the command, if any
    memory_cgroup: str | None = None  # its cgroup v1 memory directory (hybrid hosts)
