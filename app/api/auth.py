"""Who a request is: an API key (``X-Session-API-Key: <key>`` or
``Authorization: Bearer <key>``) or, from a browser, the session cookie
``actionq_session`` that ``POST /api/session`` sets (``session_token``).

Checked twice over: by ``RequestGate`` (``actionq.api.gate``) before anything
reads the request body, and by the ``require_api_key`` dependency, which also
declares the three schemes in the OpenAPI spec (the Authorize button of /docs).

A cookie is an ambient credential (the browser sends it whoever made the page
that asks), so a request that it alone authenticates, with a method that may
change something, must come from a page of the API's own origin (CSRF).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Request, Security
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
)

from actionq.api.session_token import SESSION_COOKIE, verify_session_token
from actionq.errors import AuthenticationError, CrossSiteRequestError

__all__ = [
    "API_KEY_HEADER",
    "SAFE_METHODS",
    "Credential",
    "authenticate",
    "authenticate_key_header",
    "check_same_origin",
    "is_valid_key",
    "presented_key",
    "require_api_key",
    "require_key_header",
]

API_KEY_HEADER = "X-Session-API-Key"
# Methods that change nothing; any other is checked for CSRF.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="A key from ACTIONQ_API_KEYS."
)
_bearer_scheme = HTTPBearer(auto_error=False, description="A key from ACTIONQ_API_KEYS.")
_cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="A browser session, set by POST /api/session. Unsafe methods "
    "(POST, PUT, PATCH, DELETE) need an Origin (or Referer) of the API's own origin.",
)


@dataclass(frozen=True)
class Credential:
    """How a request authenticated: ``key`` is the configured key it sent or
    whose session it holds; ``session_expires_at`` (Unix s) is set when the
    session cookie, not a key header, authenticated it."""

    key: str
    session_expires_at: int | None = None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries in its headers, valid or not (None: none)."""
    return _presented_key(headers.get(API_KEY_HEADER), headers.get("authorization"))


def _presented_key(x_session_api_key: str | None, authorization: str | None) -> str | None:
    if x_session_api_key:
        return x_session_api_key
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None


def authenticate_key_header(headers: Mapping[str, str], keys: list[str]) -> Credential:
    """The key in ``headers``; ``AuthenticationError`` unless it is one of ``keys``."""
    presented = presented_key(headers)
    if presented is None:
        raise AuthenticationError(
            "missing API key: send it as 'X-Session-API-Key: <key>' or "
            "'Authorization: Bearer <key>'"
        )
    if not is_valid_key(presented, keys):
        raise AuthenticationError("invalid API key")
    return Credential(presented)


def authenticate(
    method: str,
    scheme: str,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    keys: list[str],
) -> Credential:
    """Who the request is: a key header if it sends one (then the cookie is
    not looked at), else the session cookie. ``AuthenticationError`` (401)
    without a valid one; ``CrossSiteRequestError`` (403) for a cookie-only
    request with an unsafe method that did not come from the API's origin."""
    if presented_key(headers) is not None:
        return authenticate_key_header(headers, keys)
    token = cookies.get(SESSION_COOKIE)
    if not token:
        raise AuthenticationError(
            "missing API key: send it as 'X-Session-API-Key: <key>' or "
            "'Authorization: Bearer <key>' (a browser: log in with POST /api/session)"
        )
    session = verify_session_token(token, keys, time.time())
    if session is None:
        raise AuthenticationError("session expired or invalid: log in again (POST /api/session)")
    if method.upper() not in SAFE_METHODS:
        check_same_origin(scheme, headers)
    return Credential(session.key, session.expires_at)


def _origin_of(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``scheme://netloc``, the port made explicit."""
    scheme = scheme.lower()
    if scheme not in ("http", "https") or not netloc:
        return None
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    return scheme, parts.hostname.lower(), port


def check_same_origin(scheme: str, headers: Mapping[str, str]) -> None:
    """Refuse (``CrossSiteRequestError``) unless the request's ``Origin`` (or,
    without one, ``Referer``) is the scheme://host:port it was sent to (its
    ``Host``), and ``Sec-Fetch-Site``, when sent, says ``same-origin``."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        raise CrossSiteRequestError(
            f"cross-site request refused: Sec-Fetch-Site is {fetch_site[:40]!r}, not "
            "'same-origin' (a request authenticated by the session cookie that may change "
            "something must come from the API's own pages; other clients send the key header)"
        )
    source = headers.get("origin")
    if source is None:
        source = headers.get("referer")
    if source is None:
        raise CrossSiteRequestError(
            "cross-site request refused: no Origin or Referer header (a request "
            "authenticated by the session cookie that may change something must say where "
            "it comes from; other clients send the key header)"
        )
    parts = urlsplit(source.strip())
    claimed = _origin_of(parts.scheme, parts.netloc)
    actual = _origin_of(scheme, headers.get("host", ""))
    if claimed is None or actual is None or claimed != actual:
        raise CrossSiteRequestError(
            f"cross-site request refused: it comes from {source[:80]!r}, not from this "
            "API's origin (a request authenticated by the session cookie that may change "
            "something must come from the API's own pages; other clients send the key header)"
        )


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
    _cookie: Annotated[str | None, Security(_cookie_scheme)],
) -> Credential:
    """Refuse the request (401, or 403 for CSRF) unless it carries one of
    ``ACTIONQ_API_KEYS`` or a session of one. (The parameters declare the
    schemes; the check reads the headers and cookies.)"""
    return authenticate(
        request.method,
        request.url.scheme,
        request.headers,
        request.cookies,
        request.app.state.settings.api_keys,
    )


def require_key_header(
    request: Request,
    _api_key: Annotated[str | None, Security(_api_key_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
) -> Credential:
    """Refuse the request (401) unless its headers carry one of
    ``ACTIONQ_API_KEYS`` (a session cookie is not enough: logging in)."""
    return authenticate_key_header(request.headers, request.app.state.settings.api_keys)
