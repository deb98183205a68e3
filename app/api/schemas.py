"""Request and response bodies of the HTTP API (their JSON schema is the OpenAPI spec)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import Conversation

__all__ = [
    "ConversationList",
    "CreateConversationRequest",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "RetryRequest",
    "SubmitActionRequest",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateConversationRequest(_Body):
    id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Optional id; creating an existing id returns it unchanged.",
    )


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
