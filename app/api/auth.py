"""API keys: ``X-Session-API-Key: <key>`` or ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac

from fastapi import Header, Request

from app.errors import ActionqError

__all__ = ["AuthenticationError", "require_api_key"]


class AuthenticationError(ActionqError):
    code = "unauthorized"


def _presented_key(x_session_api_key: str | None, authorization: str | None) -> str | None:
    if x_session_api_key:
        return x_session_api_key
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None


def require_api_key(
    request: Request,
    x_session_api_key: str | None = Header(None, include_in_schema=False),
    authorization: str | None = Header(None, include_in_schema=False),
) -> None:
    """Refuse the request (401) unless it carries one of ``ACTIONQ_API_KEYS``."""
    presented = _presented_key(x_session_api_key, authorization)
    if presented is None:
        raise AuthenticationError(
            "missing API key: send it as 'X-Session-API-Key: <key>' or "
            "'Authorization: Bearer <key>'"
        )
    keys: list[str] = request.app.state.settings.api_keys
    # Compare with every key, in constant time, so timing tells nothing.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    if not matched:
        raise AuthenticationError("invalid API key")
