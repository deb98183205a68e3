"""Request and response bodies of the HTTP API (their JSON schema is the OpenAPI spec)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actionq.agent.spec import ConfirmationPolicy
from actionq.api.openhands.info import ConversationInfo
from actionq.models import (
    ActionRecord,
    ActionState,
    ErrorDetail,
)

__all__ = [
    "ActionResponse",
    "ConfirmationPolicyRequest",
    "ConfirmationResponse",
    "ConversationPage",
    "ErrorBody",
    "ErrorResponse",
    "EventEnvelope",
    "EventEnvelopePage",
    "EventSearchPage",
    "HealthResponse",
    "InitialMessage",
    "RetryRequest",
    "SendMessageRequest",
    "SessionResponse",
    "SubmitActionRequest",
    "Success",
    "TextContent",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _valid_unicode(self) -> Self:
        """JSON may carry lone surrogates (``"\\ud800"``), which are no text
        and cannot be stored: refuse them here, with where they are."""
        stack: list[tuple[str, Any]] = [("", self.model_dump())]
        while stack:
            where, value = stack.pop()
            if isinstance(value, str):
                try:
                    value.encode()
                except UnicodeEncodeError as e:
                    raise ValueError(
                        f"{where.lstrip('.') or 'body'} is not valid Unicode: lone surrogate "
                        f"{value[e.start]!r} at character {e.start}"
                    ) from None
            elif isinstance(value, dict):
                stack.extend((f"{where}.{k}", v) for k, v in value.items())
                stack.extend((f"{where}.<key>", k) for k in value)
            elif isinstance(value, list):
                stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        return self


class TextContent(_Body):
    """One part of a message's content, as OpenHands has it (text only here;
    ``cache_prompt``, a prompt-caching hint of OpenHands' LLM, is accepted and
    has no effect)."""

    type: Literal["text"] = "text"
    text: str
    cache_prompt: bool = False


class SendMessageRequest(_Body):
    """A user message (OpenHands' ``SendMessageRequest``): ``content`` is a
    string or a list of text parts, which are joined with newlines."""

    role: Literal["user"] = Field("user", description="Only user messages can be sent.")
    content: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[TextContent], Field(min_length=1, max_length=1000)]
    )
    run: bool = Field(False, description="Run the conversation after the message.")
    sender: str | None = Field(None, max_length=256, description="Accepted; not stored.")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class InitialMessage(SendMessageRequest):
    """The first message, sent once the conversation is created (runs by
    default, as OpenHands always does)."""

    run: bool = Field(True, description="Run the conversation after the message.")


class ConfirmationResponse(_Body):
    """OpenHands' ``ConfirmationResponseRequest``."""

    accept: bool = Field(description="true: the held calls run; false: each is rejected.")
    reason: str = Field(
        "User rejected the action.",
        max_length=10_000,
        description="Given to the agent with each rejected call.",
    )


class ConfirmationPolicyRequest(_Body):
    policy: ConfirmationPolicy


class Success(_Body):
    """OpenHands' answer to the routes that return no state."""

    success: bool = True


class SubmitActionRequest(_Body):
    """A tool call from an external agent."""

    tool: str = Field(min_length=1, max_length=128, description="A registered tool name.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")
    tool_call_id: str | None = Field(
        None, min_length=1, max_length=256, description="Unique per conversation."
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Posting again with the same key returns the same action.",
    )
    thought: str = Field("", max_length=100_000)


class ActionResponse(BaseModel):
    """An action as the API shows it: times in ISO 8601 (UTC), without the
    store's internal fields (claim fence, process group, cgroups)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    conversation_id: str
    state: ActionState
    tool: str
    arguments: dict[str, Any]
    tool_call_id: str
    fingerprint: str = Field(description="Identity of the call (tool + arguments).")
    created_at: str
    attempt: int = Field(description="How many times a message for it was delivered.")
    owner: str | None = Field(description="Worker id of its claim.")
    host: str | None
    pid: int | None
    claimed_at: str | None
    finished_at: str | None
    terminal_kind: str | None = Field(description="Kind of the event that ended it.")
    retry_of: str | None

    @classmethod
    def of(cls, action: ActionRecord) -> ActionResponse:
        # Only the fields declared here: a field added to the store's record
        # stays internal until it is added to this schema too.
        shown = action.model_dump(include=set(cls.model_fields) - {"claimed_at", "finished_at"})
        return cls(
            **shown, claimed_at=_iso(action.claimed_at), finished_at=_iso(action.finished_at)
        )


def _iso(epoch_seconds: float | None) -> str | None:
    if epoch_seconds is None:
        return None
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()


class RetryRequest(_Body):
    force: bool = Field(False, description="Run it even if it is quarantined.")


class ConversationPage(_Body):
    """OpenHands' ``ConversationPage``: follow ``next_page_id`` (opaque)."""

    items: list[ConversationInfo]
    next_page_id: str | None


class EventSearchPage(_Body):
    """OpenHands' ``EventPage``: events in the SDK's JSON; ``next_page_id``
    is an opaque cursor to pass back as ``page_id``."""

    items: list[dict[str, Any]]
    next_page_id: str | None


class EventEnvelope(_Body):
    """An event (OpenHands' JSON, in ``event``) with what actionq adds: its
    ``seq``, and for a crash the action id and the crash's ``detail``."""

    seq: int
    event: dict[str, Any]
    action_id: str | None = None
    detail: ErrorDetail | None = None
    retry_of: str | None = None


class EventEnvelopePage(_Body):
    items: list[EventEnvelope]
    next_after_seq: int | None


class SessionResponse(_Body):
    """A browser session: when it ends (UTC). None: the request sent a key
    header, which does not end."""

    expires_at: datetime | None


class HealthResponse(_Body):
    status: str
    redis: bool
    live_workers: int


class ErrorBody(_Body):
    code: str
    message: str


class ErrorResponse(_Body):
    error: ErrorBody
