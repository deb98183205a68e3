"""The browser session token (actionq.api.session_token) and the same-origin
rule for cookie-authenticated changes (actionq.api.auth.check_same_origin)."""

from __future__ import annotations

import pytest

from actionq.api.auth import Credential, authenticate, check_same_origin
from actionq.api.session_token import (
    SESSION_COOKIE,
    Session,
    make_session_token,
    verify_session_token,
)
from actionq.errors import AuthenticationError, CrossSiteRequestError

KEY = "k-" + "a" * 40
OTHER = "k-" + "b" * 40
NOW = 1_800_000_000


def test_a_token_is_valid_for_its_key_until_it_expires() -> None:
    token = make_session_token(KEY, NOW + 60)
    assert verify_session_token(token, [OTHER, KEY], NOW) == Session(KEY, NOW + 60)
    assert verify_session_token(token, [KEY], NOW + 59.9) == Session(KEY, NOW + 60)
    assert verify_session_token(token, [KEY], NOW + 60) is None  # expired
    assert verify_session_token(token, [OTHER], NOW) is None  # its key was removed
    assert verify_session_token(token, [], NOW) is None


def test_the_token_holds_neither_the_key_nor_its_digest() -> None:
    import hashlib

    token = make_session_token(KEY, NOW + 60)
    assert KEY not in token and KEY.removeprefix("k-") not in token
    assert hashlib.sha256(KEY.encode()).hexdigest() not in token
    version, expiry, nonce, mac = token.split(".")
    assert (version, expiry) == ("v1", str(NOW + 60)) and len(nonce) == 22 and len(mac) == 64
    # Each login gets its own token.
    assert make_session_token(KEY, NOW + 60) != token


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace(f".{NOW + 60}.", f".{NOW + 6000}."),  # a later expiry
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # the MAC
        lambda t: (
            t.split(".")[0] + "." + t.split(".")[1] + ".AAAAAAAAAAAAAAAAAAAAAA." + t.split(".")[3]
        ),
        lambda t: "v2" + t[2:],
        lambda t: t + ".",
        lambda t: t.upper(),
        lambda t: "",
        lambda t: "v1.1.2.3",
        lambda t: KEY,
    ],
)
def test_a_tampered_or_malformed_token_is_refused(tamper: object) -> None:
    token = make_session_token(KEY, NOW + 60)
    changed = tamper(token)  # type: ignore[operator]
    assert changed != token
    assert verify_session_token(changed, [KEY], NOW) is None


def _cookie_request(method: str, **headers: str) -> Credential:
    token = make_session_token(KEY, NOW * 2)
    return authenticate(
        method, "http", {"host": "127.0.0.1:8000", **headers}, {SESSION_COOKIE: token}, [KEY]
    )


def test_the_cookie_authenticates_a_safe_request_from_anywhere() -> None:
    assert _cookie_request("GET", origin="http://evil.example") == Credential(KEY, NOW * 2)
    assert _cookie_request("GET").key == KEY


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://127.0.0.1:8000"},
        {"origin": "HTTP://127.0.0.1:8000", "sec-fetch-site": "same-origin"},
        {"referer": "http://127.0.0.1:8000/console?x=1"},
    ],
)
def test_a_cookie_change_from_the_same_origin_passes(headers: dict[str, str]) -> None:
    assert _cookie_request("POST", **headers).key == KEY


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": ""},
        {"origin": "https://127.0.0.1:8000"},  # another scheme
        {"origin": "http://127.0.0.1:8001"},  # another port
        {"origin": "http://127.0.0.1"},  # port 80
        {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-site"},
        {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "cross-site"},
        {"origin": "http://evil.example", "referer": "http://127.0.0.1:8000/"},  # Origin wins
        {"referer": "http://127.0.0.1:8000.evil.example/"},
        {"referer": "http://user@127.0.0.1:8000/"},
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_cookie_change_from_elsewhere_is_refused(method: str, headers: dict[str, str]) -> None:
    with pytest.raises(CrossSiteRequestError):
        _cookie_request(method, **headers)


def test_default_ports_match() -> None:
    check_same_origin("https", {"host": "actionq.example", "origin": "https://actionq.example:443"})
    check_same_origin("http", {"host": "[::1]:80", "origin": "http://[::1]"})


def test_a_key_header_needs_no_origin_and_wins_over_the_cookie() -> None:
    headers = {"host": "127.0.0.1:8000", "origin": "http://evil.example", "X-Session-API-Key": KEY}
    assert authenticate("POST", "http", headers, {}, [KEY]) == Credential(KEY)
    # A wrong key header is refused even with a valid cookie beside it.
    token = make_session_token(KEY, NOW * 2)
    with pytest.raises(AuthenticationError):
        authenticate("GET", "http", {"X-Session-API-Key": "wrong"}, {SESSION_COOKIE: token}, [KEY])


def test_no_credential_or_a_bad_cookie_is_unauthenticated() -> None:
    with pytest.raises(AuthenticationError, match="missing API key"):
        authenticate("GET", "http", {}, {}, [KEY])
    with pytest.raises(AuthenticationError, match="session expired or invalid"):
        authenticate("GET", "http", {}, {SESSION_COOKIE: "v1.garbage"}, [KEY])
    expired = make_session_token(KEY, 1_000_000_000)  # 2001
    with pytest.raises(AuthenticationError, match="session expired or invalid"):
        authenticate("GET", "http", {}, {SESSION_COOKIE: expired}, [KEY])
