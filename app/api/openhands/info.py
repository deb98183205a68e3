"""``ConversationInfo``: a conversation as OpenHands' agent-server describes it
(what ``RemoteConversation`` reads: ``id``, ``agent``, ``workspace``,
``execution_status``, ``confirmation_policy``, ``max_iterations``), plus
actionq's own fields (``last_seq``, the active action, the queue, the step
count, calls waiting for confirmation). Clients read it as a dict, so the
extra fields cost them nothing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actionq.agent.spec import AgentSpec, NeverConfirm
from actionq.models import Conversation, ConversationStatus
from actionq.service import ActionQ

__all__ = [
    "SECRET_MASK",
    "ConversationInfo",
    "LocalWorkspace",
    "conversation_info",
    "info_of",
    "load_info",
]

# What the SDK's own model_dump shows for a SecretStr.
SECRET_MASK = "**********"


class LocalWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["LocalWorkspace"] = "LocalWorkspace"
    working_dir: str


class ConversationInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    execution_status: ConversationStatus
    created_at: str
    updated_at: str
    agent: dict[str, Any] | None = Field(
        description="The agent: as an OpenHands client sent it (secrets masked), or "
        "actionq's own spec (kind llm or scripted); null for a conversation that only "
        "runs the tool calls posted to it."
    )
    workspace: LocalWorkspace
    confirmation_policy: dict[str, Any]
    max_iterations: int
    stuck_detection: bool = True
    title: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    security_analyzer: None = None
    # actionq's own
    last_seq: int = Field(description="seq of the latest event.")
    active_action_id: str | None = Field(description="The action running or next to run.")
    queued_actions: int
    iteration: int = Field(description="Model steps of the current run.")
    pending_confirmation: int = Field(description="Calls waiting for the user.")
    archived: bool = Field(
        False,
        description="Served from the archive (ACTIONQ_ARCHIVE_URL): read-only, every change "
        "is a 409.",
    )


def conversation_info(
    conversation: Conversation,
    spec: AgentSpec | None,
    policy: dict[str, Any] | None,
    working_dir: str,
    default_max_iterations: int,
    archived: bool = False,
) -> ConversationInfo:
    """``policy``: the confirmation policy set since creation, if any."""
    agent: dict[str, Any] | None = None
    if spec is not None:
        agent = spec.client_agent or spec.model_dump(
            mode="json",
            # Never the sealed key either: a sealed token is still a secret.
            exclude={
                "client_agent": True,
                "confirmation_policy": True,
                "model": {"api_key_sealed"},
            },
            exclude_none=True,
        )
    if policy is None:
        policy = (spec.confirmation_policy if spec else NeverConfirm()).model_dump(mode="json")
    return ConversationInfo(
        id=conversation.id,
        execution_status=conversation.status,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        agent=agent,
        workspace=LocalWorkspace(working_dir=working_dir),
        confirmation_policy=policy,
        max_iterations=(spec.max_iterations if spec else None) or default_max_iterations,
        stuck_detection=spec.stuck_detection if spec else True,
        last_seq=conversation.last_seq,
        active_action_id=conversation.active_action_id,
        queued_actions=conversation.queued_actions,
        iteration=conversation.iteration,
        pending_confirmation=conversation.pending_confirmation,
        archived=archived,
    )


def load_info(aq: ActionQ, conversation_id: str) -> ConversationInfo:
    """The conversation's info as it is now (``NotFoundError`` if unknown)."""
    return info_of(aq, aq.get_conversation_live(conversation_id))


def info_of(
    aq: ActionQ, conversation: Conversation, archived: bool | None = None
) -> ConversationInfo:
    """The info of a conversation already read (its agent read here).
    ``archived`` None: asked (only when an archive is set)."""
    if archived is None:
        archived = aq.archive is not None and aq.is_archived(conversation.id)
    agent = aq.agent_spec(conversation.id) if conversation.agent else None
    spec, policy = agent if agent is not None else (None, None)
    return conversation_info(
        conversation,
        spec,
        policy,
        aq.workspace_dir(conversation.id),
        aq.settings.agent_max_iterations,
        archived,
    )
