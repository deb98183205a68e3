"""Browser sessions: the value of the ``actionq_session`` cookie.

A token is ``v1.<expiry>.<nonce>.<mac>``: ``expiry`` in Unix seconds, a
random ``nonce``, and ``mac`` = HMAC-SHA256 over
``actionq-session|v1|<expiry>|<nonce>`` with a secret derived from one of
``ACTIONQ_API_KEYS``. Nothing is stored: every API process with the same keys
accepts it, and removing the key from ``ACTIONQ_API_KEYS`` ends its sessions.

The MAC's secret is PBKDF2 of the key, not the key itself, so that a token
(which a browser holds and may leak) is no cheap test of guesses at a weak
key; it is derived once per key and process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "SESSION_COOKIE",
    "Session",
    "make_session_token",
    "session_secret",
    "verify_session_token",
]

SESSION_COOKIE = "actionq_session"
_VERSION = "v1"
_PBKDF2_SALT = b"actionq-session-secret|v1"
_PBKDF2_ITERATIONS = 200_000
# Strict shape: a malformed token is refused before any MAC is computed.
_TOKEN = re.compile(r"v1\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([0-9a-f]{64})")


@dataclass(frozen=True)
class Session:
    """A valid session: the configured key that signed it, and its end."""

    key: str
    expires_at: int


@lru_cache(maxsize=256)
def session_secret(key: str) -> bytes:
    """The HMAC secret of ``key``'s sessions (slow to compute: cached)."""
    return hashlib.pbkdf2_hmac(
        "sha256", key.encode("utf-8", "surrogatepass"), _PBKDF2_SALT, _PBKDF2_ITERATIONS
    )


def _mac(key: str, expiry: str, nonce: str) -> str:
    message = f"actionq-session|{_VERSION}|{expiry}|{nonce}".encode()
    return hmac.new(session_secret(key), message, hashlib.sha256).hexdigest()


def make_session_token(key: str, expires_at: int, nonce: str | None = None) -> str:
    """A token for a session of ``key`` that ends at ``expires_at`` (Unix s)."""
    nonce = nonce if nonce is not None else secrets.token_urlsafe(16)
    expiry = str(expires_at)
    return f"{_VERSION}.{expiry}.{nonce}.{_mac(key, expiry, nonce)}"


def verify_session_token(token: str, keys: list[str], now: float) -> Session | None:
    """The session ``token`` is, if one of ``keys`` signed it and it has not
    ended at ``now``; else None (malformed, tampered, expired, key removed)."""
    shape = _TOKEN.fullmatch(token)
    if shape is None:
        return None
    expiry, nonce, given = shape.groups()
    # Check against every key, each in constant time, so timing tells
    # nothing about which key (or how much of a MAC) matched.
    signer: str | None = None
    for key in keys:
        if hmac.compare_digest(_mac(key, expiry, nonce), given):
            signer = key
    if signer is None or int(expiry) <= now:
        return None
    return Session(signer, int(expiry))
