"""``/api/session``: log a browser in with the key once; it then holds only
the ``actionq_session`` cookie (HttpOnly: page scripts never see it), which
every route but the WebSocket accepts in place of the key header
(``actionq.api.auth``)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from actionq.api.auth import Credential, require_api_key, require_key_header
from actionq.api.schemas import ErrorResponse, SessionResponse
from actionq.api.session_token import SESSION_COOKIE, make_session_token

__all__ = ["session_cookie", "session_router"]

session_router = APIRouter(tags=["session"])


def session_cookie(token: str, max_age: int, secure: bool) -> str:
    """The Set-Cookie value. ``Secure`` only over https: a browser refuses
    to store a Secure cookie sent over plain http (``actionq up`` on
    127.0.0.1), and over https it keeps the cookie off any http request."""
    cookie = f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    return cookie + "; Secure" if secure else cookie


def _over_https(request: Request) -> bool:
    # The scheme uvicorn saw: https over TLS, or X-Forwarded-Proto from a
    # proxy it trusts (--forwarded-allow-ips); never a client's own say-so.
    return request.url.scheme == "https"


def _utc(unix_seconds: int) -> datetime:
    return datetime.fromtimestamp(unix_seconds, UTC)


@session_router.post(
    "/api/session", response_model=SessionResponse, responses={401: {"model": ErrorResponse}}
)
def log_in(
    request: Request,
    response: Response,
    credential: Annotated[Credential, Depends(require_key_header)],
) -> SessionResponse:
    """Start a browser session: the key in a header (a session cookie alone
    is not enough) gets the ``actionq_session`` cookie, valid for
    ``ACTIONQ_SESSION_TTL_SECONDS`` or until its key leaves ``ACTIONQ_API_KEYS``."""
    ttl: int = request.app.state.settings.session_ttl_seconds
    expires_at = math.ceil(time.time()) + ttl
    token = make_session_token(credential.key, expires_at)
    response.headers.append("set-cookie", session_cookie(token, ttl, _over_https(request)))
    return SessionResponse(expires_at=_utc(expires_at))


@session_router.get(
    "/api/session",
    response_model=SessionResponse,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)
def session_info(credential: Annotated[Credential, Depends(require_api_key)]) -> SessionResponse:
    """200 while the request's session cookie (or key header) is valid, with
    when the session ends (null for a key header); else 401."""
    expires_at = credential.session_expires_at
    return SessionResponse(expires_at=None if expires_at is None else _utc(expires_at))


@session_router.delete("/api/session", status_code=204, response_class=Response)
def log_out(request: Request) -> Response:
    """Clear the session cookie (204), valid or not. The token itself stays
    valid until it expires or its key is removed (nothing is stored to revoke)."""
    response = Response(status_code=204)
    response.headers.append("set-cookie", session_cookie("", 0, _over_https(request)))
    return response
