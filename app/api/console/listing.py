"""``GET /api/console/conversations`` (a page, newest first, optionally of one
status) and ``GET /api/console/conversations/{conversation_id}`` (one row):
status, last change and, in ``error``, what crashed. Read from the
conversation index or the per-status index (docs/design.md), so a page
costs O(limit) Redis work."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from actionq.api.auth import require_api_key
from actionq.api.schemas import ErrorResponse
from actionq.models import Conversation, ConversationError, ConversationStatus
from actionq.service import ActionQ

__all__ = [
    "ConsoleConversation",
    "ConsoleConversationPage",
    "listing_router",
]

MAX_LIMIT = 100
DEFAULT_LIMIT = 50

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 422, 503)
}
listing_router = APIRouter(
    prefix="/api/console",
    dependencies=[Depends(require_api_key)],
    responses=_ERRORS,
    tags=["console"],
)


class ConsoleConversation(BaseModel):
    """One row of the console's list."""

    model_config = ConfigDict(extra="forbid")

    id: str
    execution_status: ConversationStatus
    created_at: str
    # The last change: a status change or an appended event.
    updated_at: str
    # Set while execution_status is error: the crash (or failed run) that put it there.
    error: ConversationError | None


class ConsoleConversationPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ConsoleConversation]
    # Pass as page_id for the next page; null: this is the last one.
    next_page_id: str | None
    # How many conversations the filter lists (all, or those of the status).
    total: int


def _aq(request: Request) -> ActionQ:
    aq: ActionQ = request.app.state.aq
    return aq


def _row(conversation: Conversation) -> ConsoleConversation:
    return ConsoleConversation(
        id=conversation.id,
        execution_status=conversation.status,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        error=conversation.error,
    )


@listing_router.get("/conversations", response_model=ConsoleConversationPage)
def list_conversations(
    aq: Annotated[ActionQ, Depends(_aq)],
    status: ConversationStatus | None = None,
    page_id: Annotated[str | None, Query(max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> ConsoleConversationPage:
    """Conversations, newest first (with ``status``, only those); follow
    ``next_page_id``. ``total`` counts all the filter lists."""
    listing = aq.store.page_conversations(status.value if status else None, page_id, limit)
    return ConsoleConversationPage(
        items=[_row(c) for c in listing.items],
        next_page_id=listing.next_page_id,
        total=listing.total,
    )


@listing_router.get("/conversations/{conversation_id}", response_model=ConsoleConversation)
def get_conversation_row(
    aq: Annotated[ActionQ, Depends(_aq)], conversation_id: str
) -> ConsoleConversation:
    """The row of one conversation (404: none of that id): the console's search by id."""
    return _row(aq.store.get_conversation(conversation_id))
