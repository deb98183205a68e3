"""Request and response bodies of the HTTP API (their JSON schema is the OpenAPI spec)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actionq.agent.spec import AgentSpec, ConfirmationPolicy
from actionq.models import (
    CONVERSATION_ID_MAX_LENGTH,
    CONVERSATION_ID_PATTERN,
    ActionRecord,
    ActionState,
    Conversation,
)

__all__ = [
    "ActionResponse",
    "ConfirmationPolicyRequest",
    "ConfirmationResponse",
    "ConversationList",
    "CreateConversationRequest",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "InitialMessage",
    "RetryRequest",
    "SendMessageRequest",
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
    """One part of a message's content, as OpenHands has it (text only here)."""

    type: Literal["text"] = "text"
    text: str


class SendMessageRequest(_Body):
    """A user message (OpenHands' ``SendMessageRequest``): ``content`` is a
    string or a list of text parts, which are joined with newlines."""

    role: Literal["user"] = Field("user", description="Only user messages can be sent.")
    content: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[TextContent], Field(min_length=1, max_length=1000)]
    )
    run: bool = Field(False, description="Run the conversation after the message.")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class InitialMessage(SendMessageRequest):
    """The first message, sent once the conversation is created (runs by
    default, as OpenHands always does)."""

    run: bool = Field(True, description="Run the conversation after the message.")


class CreateConversationRequest(_Body):
    id: str | None = Field(
        None,
        min_length=1,
        max_length=CONVERSATION_ID_MAX_LENGTH,
        # Alphanumeric first and no '/': see actionq.models.
        pattern=CONVERSATION_ID_PATTERN,
        description="Optional id: letters, digits, '_', '.', '-', starting with a letter or "
        "digit. Creating an existing id returns it unchanged (200).",
    )
    agent: AgentSpec | None = Field(
        None,
        description="The conversation's agent: a model profile the server knows "
        "(kind llm; never a credential) or a script (kind scripted). Without it the "
        "conversation only runs the tool calls posted to it.",
    )
    initial_message: InitialMessage | None = Field(
        None, description="Sent after the conversation is created (not when it existed)."
    )


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


class ConversationList(_Body):
    items: list[Conversation]
    next_offset: int | None


class HealthResponse(_Body):
    status: str
    redis: bool
    live_workers: int


class ErrorBody(_Body):
    code: str
    message: str


class ErrorResponse(_Body):
    error: ErrorBody
