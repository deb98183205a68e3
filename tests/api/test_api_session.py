"""Browser sessions over real HTTP, against a real `actionq up`: the key is
sent once (POST /api/session), then the `actionq_session` cookie alone
authenticates, the event stream included; a cookie-only change from another
origin is refused (CSRF)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for
from tests.up_process import UpProcess, start_up, stop_up

KEY_A = "session-test-key-a-" + "a" * 24
KEY_B = "session-test-key-b-" + "b" * 24
COOKIE_LINE = re.compile(
    r"actionq_session=(v1\.[0-9]+\.[A-Za-z0-9_-]+\.[0-9a-f]{64}); "
    r"HttpOnly; SameSite=Strict; Path=/; Max-Age=([0-9]+)"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    base = tmp_path_factory.mktemp("up")
    up = start_up(base / ".actionq", base / "up.log", ACTIONQ_API_KEYS=f"{KEY_A},{KEY_B}")
    yield up
    stop_up(up)


def log_in(up: UpProcess, key: str) -> str:
    """The token the cookie of a login with ``key`` holds."""
    response = httpx.post(up.url + "/api/session", headers={"X-Session-API-Key": key})
    assert response.status_code == 200, response.text
    match = COOKIE_LINE.fullmatch(response.headers["set-cookie"])
    assert match, response.headers["set-cookie"]
    return match.group(1)


def with_cookie(token: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"actionq_session={token}", **headers}


def conversation_count(up: UpProcess) -> int:
    response = httpx.get(up.url + "/api/conversations/count", headers=up.headers())
    assert response.status_code == 200, response.text
    count: int = response.json()
    return count


def test_login_sets_the_cookie_with_its_flags(stack: UpProcess) -> None:
    before = time.time()
    response = httpx.post(stack.url + "/api/session", headers={"Authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 200, response.text
    [cookie] = response.headers.get_list("set-cookie")
    # Exactly these flags; no Secure over plain http (a browser would drop it).
    match = COOKIE_LINE.fullmatch(cookie)
    assert match and match.group(2) == "3600", cookie
    token = match.group(1)
    assert KEY_A not in token and KEY_A not in response.text
    expires_at = datetime.fromisoformat(response.json()["expires_at"])
    assert expires_at.tzinfo is not None and expires_at.utcoffset() == UTC.utcoffset(None)
    assert before + 3600 <= expires_at.timestamp() <= time.time() + 3601
    # The token's expiry is the one answered; each login gets a new token.
    assert token.split(".")[1] == str(int(expires_at.timestamp()))
    assert log_in(stack, KEY_A) != token
    assert token not in stack.output()  # never logged


def test_a_wrong_or_missing_key_gets_401_and_no_cookie(stack: UpProcess) -> None:
    token = log_in(stack, KEY_A)
    same_origin = {"Origin": stack.url}
    for headers in (
        {},
        {"X-Session-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        # A wrong key is refused even beside a valid cookie.
        with_cookie(token, **{"X-Session-API-Key": "wrong"}),
        # A session cannot log itself in again: the key is needed.
        with_cookie(token, **same_origin),
    ):
        response = httpx.post(stack.url + "/api/session", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert "set-cookie" not in response.headers


def test_the_cookie_alone_reads_a_conversation_and_its_stream(stack: UpProcess) -> None:
    client = stack.client()
    cid = client.create_conversation()["id"]
    client.submit_action(cid, {"tool": "terminal", "arguments": {"command": "echo hi"}})
    client.close()
    token = log_in(stack, KEY_B)

    read = httpx.get(f"{stack.url}/api/conversations/{cid}", headers=with_cookie(token))
    assert read.status_code == 200, read.text
    assert read.json()["id"] == cid
    info = httpx.get(stack.url + "/api/session", headers=with_cookie(token))
    assert info.status_code == 200
    assert datetime.fromisoformat(info.json()["expires_at"]).timestamp() == int(token.split(".")[1])
    # A key header has no session to end.
    keyed = httpx.get(stack.url + "/api/session", headers={"X-Session-API-Key": KEY_B})
    assert keyed.status_code == 200 and keyed.json() == {"expires_at": None}

    # What EventSource does: a GET with the cookie, no header, no key in the URL.
    with httpx.stream(
        "GET",
        f"{stack.url}/api/conversations/{cid}/events/stream",
        params={"timeout": 20},
        headers=with_cookie(token, Accept="text/event-stream"),
        timeout=httpx.Timeout(5, read=30),
    ) as response:
        assert response.status_code == 200
        data = next(ln for ln in response.iter_lines() if ln.startswith("data:"))
    first = json.loads(data.removeprefix("data:"))
    assert first["seq"] == 1 and first["event"]["kind"]


def test_an_expired_or_tampered_cookie_is_401(stack: UpProcess) -> None:
    token = log_in(stack, KEY_A)
    version, expiry, nonce, mac = token.split(".")
    later = f"{version}.{int(expiry) + 86_400}.{nonce}.{mac}"
    flipped = f"{version}.{expiry}.{nonce}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}"
    for bad in (later, flipped, "v1.garbage", KEY_A):
        for path in ("/api/session", "/api/conversations/count"):
            response = httpx.get(stack.url + path, headers=with_cookie(bad))
            assert response.status_code == 401, (bad, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
    # Nothing at all: 401 too.
    for path in ("/api/session", "/api/conversations/count"):
        assert httpx.get(stack.url + path).status_code == 401


def test_a_cookie_change_from_another_origin_is_refused(stack: UpProcess) -> None:
    token = log_in(stack, KEY_A)
    before = conversation_count(stack)
    refused = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {},  # neither Origin nor Referer
        {"Referer": "http://evil.example/page"},
        {"Origin": stack.url, "Sec-Fetch-Site": "cross-site"},
        {"Origin": stack.url.replace("127.0.0.1", "localhost")},
    ]
    for headers in refused:
        response = httpx.post(
            stack.url + "/api/conversations", headers=with_cookie(token, **headers), json={}
        )
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["error"]["code"] == "cross_site_request"
    # Refused before the body is read: malformed JSON is not even judged.
    malformed = httpx.post(
        stack.url + "/api/conversations",
        headers=with_cookie(
            token, Origin="http://evil.example", **{"Content-Type": "application/json"}
        ),
        content=b"{not json",
    )
    assert malformed.status_code == 403, malformed.text
    # DELETE is a change too: the conversation stays.
    cid = httpx.post(stack.url + "/api/conversations", headers=stack.headers(), json={}).json()[
        "id"
    ]
    deleted = httpx.delete(
        f"{stack.url}/api/conversations/{cid}",
        headers=with_cookie(token, Origin="http://evil.example"),
    )
    assert deleted.status_code == 403, deleted.text
    assert httpx.get(f"{stack.url}/api/conversations/{cid}", headers=stack.headers()).is_success
    assert conversation_count(stack) == before + 1

    # From the page's own origin it works: Origin, or Referer alone.
    for headers in (
        {"Origin": stack.url, "Sec-Fetch-Site": "same-origin"},
        {"Referer": stack.url + "/console"},
    ):
        made = httpx.post(
            stack.url + "/api/conversations", headers=with_cookie(token, **headers), json={}
        )
        assert made.status_code == 201, (headers, made.text)
    assert conversation_count(stack) == before + 3


def test_a_key_header_works_from_any_origin(stack: UpProcess) -> None:
    before = conversation_count(stack)
    headers = {
        "X-Session-API-Key": KEY_B,
        "Origin": "http://evil.example",
        "Sec-Fetch-Site": "cross-site",
    }
    made = httpx.post(stack.url + "/api/conversations", headers=headers, json={})
    assert made.status_code == 201, made.text
    assert conversation_count(stack) == before + 1


def test_log_out_clears_the_cookie(stack: UpProcess) -> None:
    # A cookie jar, as a browser keeps it.
    with httpx.Client(base_url=stack.url, headers={"Origin": stack.url}) as browser:
        assert browser.post("/api/session", headers={"X-Session-API-Key": KEY_A}).is_success
        assert browser.get("/api/session").status_code == 200
        out = browser.delete("/api/session")
        assert out.status_code == 204
        assert out.headers["set-cookie"] == (
            "actionq_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        )
        assert browser.get("/api/session").status_code == 401
        # Without a session it answers the same.
        assert browser.delete("/api/session").status_code == 204
    assert httpx.delete(stack.url + "/api/session").status_code == 204


def test_sessions_outlive_a_restart_but_not_their_key_nor_their_ttl(tmp_path: Path) -> None:
    data_dir, log = tmp_path / ".actionq", tmp_path / "up.log"
    up = start_up(data_dir, log, ACTIONQ_API_KEYS=f"{KEY_A},{KEY_B}")
    try:
        of_a, of_b = log_in(up, KEY_A), log_in(up, KEY_B)
    finally:
        stop_up(up)
    # Key A removed, and sessions made short.
    up = start_up(data_dir, log, ACTIONQ_API_KEYS=KEY_B, ACTIONQ_SESSION_TTL_SECONDS="2")
    try:
        # Nothing was stored: a new process accepts B's session, not A's.
        assert httpx.get(up.url + "/api/session", headers=with_cookie(of_b)).status_code == 200
        gone = httpx.get(up.url + "/api/session", headers=with_cookie(of_a))
        assert gone.status_code == 401, gone.text

        response = httpx.post(up.url + "/api/session", headers={"X-Session-API-Key": KEY_B})
        match = COOKIE_LINE.fullmatch(response.headers["set-cookie"])
        assert match and match.group(2) == "2"
        short = match.group(1)
        ends = datetime.fromisoformat(response.json()["expires_at"]).timestamp()
        assert httpx.get(up.url + "/api/session", headers=with_cookie(short)).status_code == 200

        def refused() -> bool:
            answer = httpx.get(up.url + "/api/session", headers=with_cookie(short))
            return answer.status_code == 401

        wait_for(refused, 15, 0.1, "the short session to expire")
        assert time.time() >= ends - 0.5  # not before its time
    finally:
        stop_up(up)


def test_the_openapi_spec_declares_the_cookie(stack: UpProcess) -> None:
    schema = httpx.get(stack.url + "/openapi.json").json()
    cookie = schema["components"]["securitySchemes"]["APIKeyCookie"]
    assert cookie | {"type": "apiKey", "in": "cookie", "name": "actionq_session"} == cookie
    listed = schema["paths"]["/api/conversations"]["post"]["security"]
    assert {"APIKeyCookie": []} in listed and {"APIKeyHeader": []} in listed
    # Logging in takes the key header only; logging out nothing.
    login = schema["paths"]["/api/session"]["post"]["security"]
    assert {"APIKeyCookie": []} not in login and {"APIKeyHeader": []} in login
    assert "security" not in schema["paths"]["/api/session"]["delete"]
