"""The actionq error tree. Every error actionq raises derives from ``ActionqError``.

ActionqError
├── ConfigurationError        bad or unknown ACTIONQ_* setting
├── StoreUnavailableError     the Redis state store cannot be reached
├── NotFoundError
│   ├── ConversationNotFound
│   └── ActionNotFound
├── ConflictError             the state does not allow the operation
│   ├── DuplicateToolCallId
│   ├── IdempotencyConflict   an idempotency key reused for another call
│   ├── InvalidTransition     e.g. resume of a conversation that is running
│   ├── QuarantinedAction     retry refused: the fingerprint crashed too often
│   └── RetryInProgress       retry refused: an earlier retry of the call is unfinished
└── UnknownToolError          no tool with that name is registered
"""

from __future__ import annotations

__all__ = [
    "ActionNotFound",
    "ActionqError",
    "ConfigurationError",
    "ConflictError",
    "ConversationNotFound",
    "DuplicateToolCallId",
    "IdempotencyConflict",
    "InvalidArgumentsError",
    "InvalidTransition",
    "NotFoundError",
    "QuarantinedAction",
    "RetryInProgress",
    "StoreUnavailableError",
    "UnknownToolError",
]


class ActionqError(Exception):
    """Root of every actionq error. ``code`` is a stable machine-readable name."""

    code = "actionq_error"


class ConfigurationError(ActionqError):
    code = "configuration_error"


class StoreUnavailableError(ActionqError):
    code = "store_unavailable"


class NotFoundError(ActionqError):
    code = "not_found"


class ConversationNotFound(NotFoundError):
    code = "conversation_not_found"


class ActionNotFound(NotFoundError):
    code = "action_not_found"


class ConflictError(ActionqError):
    code = "conflict"


class DuplicateToolCallId(ConflictError):
    code = "duplicate_tool_call_id"


class IdempotencyConflict(ConflictError):
    code = "idempotency_conflict"


class InvalidTransition(ConflictError):
    code = "invalid_transition"


class QuarantinedAction(ConflictError):
    code = "quarantined"


class RetryInProgress(ConflictError):
    code = "retry_in_progress"


class UnknownToolError(ActionqError):
    code = "unknown_tool"


class InvalidArgumentsError(ActionqError):
    code = "invalid_arguments"
