"""API keys: ``X-Session-API-Key: <key>`` or ``Authorization: Bearer <key>``.

Checked twice over: by ``RequestGate`` (``actionq.api.gate``) before anything
reads the request body, and by the ``require_api_key`` dependency, which also
declares both schemes in the OpenAPI spec (the Authorize button of /docs).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from actionq.errors import AuthenticationError

__all__ = ["API_KEY_HEADER", "authenticate", "is_valid_key", "presented_key", "require_api_key"]

API_KEY_HEADER = "X-Session-API-Key"

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="A key from ACTIONQ_API_KEYS."
)
_bearer_scheme = HTTPBearer(auto_error=False, description="A key from ACTIONQ_API_KEYS.")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries, valid or not (None: none)."""
    return _presented_key(headers.get(API_KEY_HEADER), headers.get("authorization"))


def _presented_key(x_session_api_key: str | None, authorization: str | None) -> str | None:
    if x_session_api_key:
        return x_session_api_key
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None


def authenticate(headers: Mapping[str, str], keys: list[str]) -> None:
    """Raise ``AuthenticationError`` unless ``headers`` carry one of ``keys``."""
    presented = presented_key(headers)
    if presented is None:
        raise AuthenticationError(
            "missing API key: send it as 'X-Session-API-Key: <key>' or "
            "'Authorization: Bearer <key>'"
        )
    if not is_valid_key(presented, keys):
        raise AuthenticationError("invalid API key")


def is_valid_key(presented: str, keys: list[str]) -> bool:
    """Whether ``presented`` is one of ``keys``."""
    # Compare with every key, in constant time, so timing tells nothing.
    # surrogatepass: a key read from JSON (the WebSocket's auth frame) may
    # hold a lone surrogate, which is no key but must not raise.
    given = presented.encode("utf-8", "surrogatepass")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode("utf-8", "surrogatepass"))
    return matched


def require_api_key(
    request: Request,
    _api_key: Annotated[str | None, Security(_api_key_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
) -> None:
    """Refuse the request (401) unless it carries one of ``ACTIONQ_API_KEYS``.
    (The two parameters declare the schemes; the check reads the headers.)"""
    authenticate(request.headers, request.app.state.settings.api_keys)
