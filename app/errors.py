"""The actionq error tree. Every error actionq raises derives from ``ActionqError``;
Redis and kombu errors are translated where they are caught, with ``raise ... from e``.

ActionqError                    ``code``: a stable machine-readable name
├── ConfigurationError          bad or unknown ACTIONQ_* setting
│   └── SecretKeyError          the secret key file (ACTIONQ_SECRET_KEY_FILE) is unusable,
│                               or a sealed secret does not open with it
├── UnavailableError            a server actionq needs cannot be reached (HTTP 503)
│   ├── StoreUnavailableError   the Redis state store
│   │   └── ClaimUnavailableError   ... when a delivery claims its action: nothing ran
│   ├── BrokerUnavailableError  the Celery broker: a message was not sent
│   └── ArchiveUnavailableError the archive (ACTIONQ_ARCHIVE_URL) cannot be read or written
├── NotFoundError               (HTTP 404)
│   ├── ConversationNotFound
│   └── ActionNotFound
├── ConflictError               the state does not allow the operation (HTTP 409)
│   ├── DuplicateToolCallId
│   ├── IdempotencyConflict     an idempotency key reused for another call
│   ├── InvalidTransition       e.g. resume of a conversation that is running
│   ├── ConversationArchived    a change to an archived conversation (it is read-only)
│   ├── QuarantinedAction       retry refused: the fingerprint crashed too often
│   └── RetryInProgress         retry refused: an earlier retry of the call is unfinished
├── UnknownToolError            no tool with that name is registered (HTTP 400)
├── CommandOutOfMemory          a tool's command was killed for memory (its cap, or the OOM killer)
├── InvalidArgumentsError       arguments too large, too deep, or refused by the tool;
│                               a malformed conversation id (422)
├── AuthenticationError         HTTP API: missing or wrong API key or session (401)
├── CrossSiteRequestError       HTTP API: a cookie-authenticated change from another origin (403)
├── BadRequestError             HTTP API: a request it understood and refuses (400)
├── TooManyStreamsError         HTTP API: this key has all its event streams open (429)
├── StreamCapacityError         HTTP API: the server has all its event streams open (503)
└── ApiError                    client side: the HTTP API answered an error, or was unreachable
"""

from __future__ import annotations

__all__ = [
    "ActionNotFound",
    "ActionqError",
    "ApiError",
    "ArchiveUnavailableError",
    "AuthenticationError",
    "BadRequestError",
    "BrokerUnavailableError",
    "ClaimUnavailableError",
    "CommandOutOfMemory",
    "ConfigurationError",
    "ConflictError",
    "ConversationArchived",
    "ConversationNotFound",
    "CrossSiteRequestError",
    "DuplicateToolCallId",
    "IdempotencyConflict",
    "InvalidArgumentsError",
    "InvalidTransition",
    "NotFoundError",
    "QuarantinedAction",
    "RetryInProgress",
    "SecretKeyError",
    "StoreUnavailableError",
    "StreamCapacityError",
    "TooManyStreamsError",
    "UnavailableError",
    "UnknownToolError",
]


class ActionqError(Exception):
    """Root of every actionq error. ``code`` is a stable machine-readable name."""

    code = "actionq_error"


class ConfigurationError(ActionqError):
    code = "configuration_error"


class SecretKeyError(ConfigurationError):
    """The key that seals stored secrets (``actionq.secrets``) is missing,
    readable by others or malformed, or a sealed secret does not open with it
    (another key, or a corrupt token). Its message never holds key material
    nor the secret."""

    code = "secret_key_error"


class UnavailableError(ActionqError):
    """A server actionq needs cannot be reached right now; nothing was stored
    or sent by the failed call. Worth retrying."""

    code = "unavailable"


class StoreUnavailableError(UnavailableError):
    code = "store_unavailable"


class ClaimUnavailableError(StoreUnavailableError):
    """The store could not be reached to claim the action; nothing ran."""


class BrokerUnavailableError(UnavailableError):
    code = "broker_unavailable"


class ArchiveUnavailableError(UnavailableError):
    """The archive sink could not be reached, or refused a write or a read
    (archival: nothing was removed from Redis)."""

    code = "archive_unavailable"


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


class ConversationArchived(ConflictError):
    """The conversation was archived (moved out of Redis); it can be read,
    never changed."""

    code = "conversation_archived"


class QuarantinedAction(ConflictError):
    code = "quarantined"


class RetryInProgress(ConflictError):
    code = "retry_in_progress"


class UnknownToolError(ActionqError):
    code = "unknown_tool"


class CommandOutOfMemory(ActionqError):
    """A tool's command was killed by the kernel for memory: it went over its
    cap (``killed_by="memory_limit"``) or the machine ran out and the OOM
    killer picked it (``"oom_killer"``). Raised by the tool once the command
    has ended; the worker records the action as a crash (cause
    ``memory_limit``): it may have had side effects, and only the command's
    processes died, so the worker goes on."""

    code = "command_out_of_memory"

    def __init__(
        self,
        command: str,
        *,
        killed_by: str,
        limit_bytes: int | None,
        peak_bytes: int | None,
        signal: int | None = None,
        exitcode: int | None = None,
        output_tail: bytes | None = None,
    ) -> None:
        self.command = command
        self.output_tail = output_tail  # the command's last output, for the crash event
        self.killed_by = killed_by
        self.limit_bytes = limit_bytes
        self.peak_bytes = peak_bytes
        self.signal = signal
        self.exitcode = exitcode
        super().__init__(self.describe())

    def describe(self) -> str:
        cap = f"{_mib(self.limit_bytes)} cap" if self.limit_bytes else "no cap"
        if self.killed_by == "memory_limit":
            what = f"it reached its memory cap of {_mib(self.limit_bytes)}"
        else:
            what = f"the machine ran out of memory and the kernel's OOM killer ended it ({cap})"
        peak = f", peak {_mib(self.peak_bytes)}" if self.peak_bytes is not None else ""
        command = self.command if len(self.command) <= 200 else self.command[:199] + "…"
        return f"{what}{peak}; command: {command}"


def _mib(size: int | None) -> str:
    if size is None:
        return "unknown"
    mib = size / (1024 * 1024)
    return f"{mib:.0f} MiB" if mib == int(mib) else f"{mib:.1f} MiB"


class InvalidArgumentsError(ActionqError):
    code = "invalid_arguments"


class AuthenticationError(ActionqError):
    code = "unauthorized"


class CrossSiteRequestError(ActionqError):
    """A request authenticated by the session cookie alone, with a method
    that may change something, that did not come from the API's own origin."""

    code = "cross_site_request"


class BadRequestError(ActionqError):
    """A request the API understood and refuses (e.g. a malformed header)."""

    code = "bad_request"


class TooManyStreamsError(ActionqError):
    """This API key has as many event streams open as it may."""

    code = "too_many_streams"


class StreamCapacityError(ActionqError):
    """The API serves as many event streams as it may."""

    code = "stream_capacity_reached"


class ApiError(ActionqError):
    """The HTTP API answered with an error (``status`` and ``code`` from its
    JSON body), or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message
