"""actionq: every tool call of an AI agent is a durable Celery job.

``from actionq import ActionQ`` is the Python API; ``celery -A actionq
worker`` finds the Celery application as ``actionq.celery``. Importing the
package builds nothing, reads no setting and connects no handler: ``ActionQ``
and ``celery`` are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actionq.errors import (
    ActionNotFound,
    ActionqError,
    ConfigurationError,
    ConflictError,
    ConversationNotFound,
    DuplicateToolCallId,
    IdempotencyConflict,
    InvalidArgumentsError,
    InvalidTransition,
    NotFoundError,
    QuarantinedAction,
    RetryInProgress,
    StoreUnavailableError,
    UnknownToolError,
)
from actionq.models import ErrorCause
from actionq.tools.registry import ToolContext, tool

if TYPE_CHECKING:
    from celery import Celery

    from actionq.service import ActionQ

    celery: Celery

__all__ = [
    "ActionNotFound",
    "ActionQ",
    "ActionqError",
    "ConfigurationError",
    "ConflictError",
    "ConversationNotFound",
    "DuplicateToolCallId",
    "ErrorCause",
    "IdempotencyConflict",
    "InvalidArgumentsError",
    "InvalidTransition",
    "NotFoundError",
    "QuarantinedAction",
    "RetryInProgress",
    "StoreUnavailableError",
    "ToolContext",
    "UnknownToolError",
    "celery",
    "tool",
]


def __getattr__(name: str) -> Any:
    # Both read the settings (and import Celery): built on first use, so that
    # `import actionq.models` stays light and `actionq --help` works while a
    # setting is wrong.
    if name == "ActionQ":
        from actionq.service import ActionQ

        return ActionQ
    if name == "celery":
        from actionq.messaging.celery_app import get_celery_app

        return get_celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
