"""What an agent is to actionq: given the messages of a conversation (OpenAI
chat format, always valid: every assistant tool call followed by exactly one
tool message with its id) and the tools' specs, return the next reply.

An agent holds no state between calls; everything it needs is in the
messages, so a step that runs again after a crash asks it the same question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from actionq.errors import ActionqError

__all__ = ["Agent", "AgentReply", "FailureKind", "ModelError", "ToolCall", "UserAction"]

# OpenHands' ErrorClassification vocabulary (openhands/sdk/event/error_classification.py).
FailureKind = Literal[
    "auth", "quota", "rate_limit", "config", "transient", "agent_action", "internal", "unknown"
]
UserAction = Literal["none", "retry", "settings"]


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a reply. ``arguments`` is the parsed JSON object; a
    model's unparsable arguments arrive as ``{"_malformed_arguments": raw}``
    (the call is still recorded, and its tool's validation answers it)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class AgentReply:
    """The model's answer to one step. ``response_id`` is shared by the
    ``ActionEvent``s of its tool calls (OpenHands' ``llm_response_id``)."""

    response_id: str
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class ModelError(ActionqError):
    """The model could not answer (after the retries a transient error gets).
    Becomes a ``ConversationErrorEvent`` and the conversation goes to ``error``."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        kind: FailureKind,
        retryable: bool,
        user_action: UserAction,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.kind: FailureKind = kind
        self.retryable = retryable
        self.user_action: UserAction = user_action


class Agent(Protocol):
    def reply(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, step: int
    ) -> AgentReply:
        """The next reply; raises ``ModelError``. ``step`` is the step number
        within the conversation (1, 2, ...), for logs; a step that runs again
        after a crash passes the same number and the same messages."""
        ...
