"""The agent that asks a real model, through litellm (``litellm.completion``,
synchronous: an agent step runs in a thread-pool worker).

- The API key is read from the profile's environment variable at each call
  and passed to litellm; it never appears in a ``ModelError``, a log line or
  an exception message this module lets out (every text kept from litellm is
  scrubbed of it).
- litellm's retries and the openai client's are turned off
  (``num_retries=0, max_retries=0``: without them the openai client alone
  makes 3 requests); this module retries rate limits, 5xx, connection errors
  and timeouts itself, ``ACTIONQ_MODEL_RETRIES`` times with exponential
  back-off, and then raises a ``ModelError``; other errors are raised at once.
- litellm is imported on first use (it takes seconds and sets process-wide
  state), so importing actionq, or this module, does not import it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from actionq.agent.base import AgentReply, FailureKind, ModelError, ToolCall, UserAction
from actionq.agent.profiles import ModelProfile
from actionq.settings import Settings

__all__ = ["MAX_BACKOFF_SECONDS", "LLMAgent", "load_litellm", "parse_response"]

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0
_MAX_DETAIL_CHARS = 2000
_REDACTED = "[redacted]"

_litellm_module: Any = None
_import_lock = threading.Lock()


def load_litellm() -> Any:
    """Import and set up litellm once per process (an agent worker may call it at
    start-up so that the first step does not pay the seconds of the import)."""
    global _litellm_module
    with _import_lock:
        if _litellm_module is None:
            # Before the import, which reads them: the bundled model cost map,
            # not a download at every start; and no `.env` file loaded into
            # this process's environment (litellm's default "DEV" mode reads
            # one from the folders above its install).
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_MODE", "PRODUCTION")
            import litellm

            # No "Give Feedback / Get Help" banner on stdout for each error.
            litellm.suppress_debug_info = True
            _litellm_module = litellm
        return _litellm_module


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, _REDACTED)
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[:_MAX_DETAIL_CHARS] + "..."
    return text


def _field(obj: Any, name: str) -> Any:
    """An attribute of a litellm object, or a key of a dict."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _arguments(raw: Any) -> dict[str, Any]:
    """The parsed arguments of a tool call; anything that is not a JSON object
    becomes ``{"_malformed_arguments": raw}`` for the tool's validation to
    answer. Empty arguments are ``{}`` (some models send "" for no arguments)."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"_malformed_arguments": raw if isinstance(raw, str) else repr(raw)}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(_field(part, "text") or "") for part in content)
    return ""


class _NoResponse(Exception):
    """The model answered without a choice (retried like a transient error)."""


def parse_response(response: Any) -> AgentReply:
    """An ``AgentReply`` from a chat completion (litellm's ``ModelResponse``)."""
    choices = _field(response, "choices") or []
    if not choices:
        raise _NoResponse("the model's answer has no choices")
    message = _field(choices[0], "message")
    calls: list[ToolCall] = []
    seen: set[str] = set()
    for raw in _field(message, "tool_calls") or []:
        function = _field(raw, "function")
        call_id = _field(raw, "id")
        if not isinstance(call_id, str) or not call_id or call_id in seen:
            call_id = f"call_{uuid.uuid4().hex[:24]}"  # none, or twice in one reply
        seen.add(call_id)
        calls.append(
            ToolCall(
                id=call_id,
                name=str(_field(function, "name") or ""),
                arguments=_arguments(_field(function, "arguments")),
            )
        )
    response_id = _field(response, "id")
    if not isinstance(response_id, str) or not response_id:
        response_id = str(uuid.uuid4())
    return AgentReply(
        response_id=response_id,
        text=_text(_field(message, "content")),
        tool_calls=calls,
    )


# (kind, user_action, retried here) by what went wrong.
_Outcome = tuple[FailureKind, UserAction, bool]
_TRANSIENT: _Outcome = ("transient", "retry", True)
_RATE_LIMIT: _Outcome = ("rate_limit", "retry", True)
_AUTH: _Outcome = ("auth", "settings", False)
_CONFIG: _Outcome = ("config", "settings", False)
_QUOTA: _Outcome = ("quota", "settings", False)
_QUOTA_WORDS = ("insufficient_quota", "exceeded your current quota", "quota exceeded")


# litellm's exception classes, by name, most specific first (several are
# subclasses of BadRequestError).
_BY_CLASS: tuple[tuple[tuple[str, ...], _Outcome], ...] = (
    # The conversation's content, not a setting.
    (("ContentPolicyViolationError",), ("agent_action", "none", False)),
    (("ContextWindowExceededError", "UnsupportedParamsError"), _CONFIG),
    (("PaymentRequiredError", "BudgetExceededError"), _QUOTA),
    (("AuthenticationError", "PermissionDeniedError"), _AUTH),
    (("RateLimitError",), _RATE_LIMIT),
    (
        (
            "Timeout",
            "APIConnectionError",
            "InternalServerError",
            "ServiceUnavailableError",
            "BadGatewayError",
        ),
        _TRANSIENT,
    ),
    (("BadRequestError", "NotFoundError", "UnprocessableEntityError"), _CONFIG),
)


def _by_status(status: int) -> _Outcome | None:
    if status == 429:
        return _RATE_LIMIT
    if status >= 500 or status == 408:
        return _TRANSIENT
    if status in (401, 403):
        return _AUTH
    if 400 <= status < 500:
        return _CONFIG
    return None


def _classify(e: Exception) -> _Outcome:
    """How OpenHands would classify a failed call (error_classification.py),
    and whether it is worth retrying."""
    if isinstance(e, _NoResponse):
        return _TRANSIENT
    exceptions = load_litellm().exceptions
    for names, outcome in _BY_CLASS:
        if isinstance(e, tuple(getattr(exceptions, name) for name in names)):
            if outcome is _RATE_LIMIT and any(w in str(e).lower() for w in _QUOTA_WORDS):
                return _QUOTA  # out of quota: waiting does not help
            return outcome
    status = getattr(e, "status_code", None)
    by_status = _by_status(status) if isinstance(status, int) else None
    if by_status is not None:
        return by_status
    if isinstance(e, exceptions.APIError):
        return ("unknown", "none", False)
    return ("internal", "none", False)  # a bug, here or in litellm


def _error_code(e: Exception) -> str:
    return "LLMNoResponseError" if isinstance(e, _NoResponse) else type(e).__name__


class LLMAgent:
    """An ``Agent`` that asks the model of a ``ModelProfile`` through litellm."""

    def __init__(
        self,
        profile: ModelProfile,
        settings: Settings,
        *,
        api_key: str | None = None,
        params: dict[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``api_key``: the key itself (a model given with the conversation),
        instead of the profile's variable; ``params``: more litellm arguments
        (temperature, max_tokens)."""
        self.profile = profile
        self.settings = settings
        self._key = api_key
        self._params = params or {}
        self._sleep = sleep

    def _api_key(self) -> str | None:
        if self._key is not None:
            return self._key
        name = self.profile.api_key_env
        if name is None:
            return None
        key = os.environ.get(name)
        if not key:
            raise ModelError(
                "APIKeyMissing",
                f"the environment variable {name} (the API key of model profile "
                f"{self.profile.name!r}) is not set in this agent worker",
                kind="auth",
                retryable=False,
                user_action="settings",
            )
        return key

    def _complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], key: str | None
    ) -> AgentReply:
        litellm = load_litellm()
        kwargs: dict[str, Any] = {
            "model": self.profile.model,
            "messages": messages,
            "tools": tools or None,
            "timeout": self.settings.model_timeout,
            # Ours are the only retries: litellm's (num_retries) and the openai
            # client's (max_retries, 2 by default) are off.
            "num_retries": 0,
            "max_retries": 0,
            **self._params,
        }
        if self.profile.base_url:
            kwargs["api_base"] = self.profile.base_url
        if key is not None:
            kwargs["api_key"] = key
        return parse_response(litellm.completion(**kwargs))

    def reply(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, step: int
    ) -> AgentReply:
        key = self._api_key()
        try:
            load_litellm()
        except ImportError as e:
            raise ModelError(
                "LiteLLMMissing",
                f"litellm cannot be imported ({e}); agent workers need actionq[llm]",
                kind="config",
                retryable=False,
                user_action="settings",
            ) from None
        retries = self.settings.model_retries
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._complete(messages, tools, key)
            except Exception as e:  # every failure becomes a ModelError
                kind, user_action, worth_retrying = _classify(e)
                code, detail = _error_code(e), _scrub(str(e), key)
            if not worth_retrying or attempt > retries:
                if worth_retrying:
                    detail = f"{detail} (gave up after {attempt} attempts)"
                # Raised outside the except block: the original exception,
                # whose text may hold the key, is neither cause nor context.
                raise ModelError(
                    code, detail, kind=kind, retryable=worth_retrying, user_action=user_action
                )
            delay = min(
                MAX_BACKOFF_SECONDS,
                # The exponent is capped: a float cannot hold 2 ** 2000.
                self.settings.model_retry_base_seconds * 2 ** min(attempt - 1, 32),
            )
            # Up to a quarter more, so that many steps hit by one rate limit
            # do not all come back at the same moment.
            delay = min(MAX_BACKOFF_SECONDS, delay * (1 + random.random() / 4))
            log.warning(
                "model %s (profile %s), step %d: %s: %s; retry %d of %d in %.1fs",
                self.profile.model,
                self.profile.name,
                step,
                code,
                detail,
                attempt,
                retries,
                delay,
            )
            self._sleep(delay)
