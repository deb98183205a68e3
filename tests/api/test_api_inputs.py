"""What the API refuses, and how it says so: over real HTTP against a real
`actionq up` subprocess (and the Python API against a real valkey)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from actionq.errors import ConflictError, IdempotencyConflict
from actionq.models import validation_error_text
from actionq.service import ActionQ
from actionq.tools.builtin import TerminalArgs
from tests.helpers import wait_for
from tests.up_process import UpProcess


def test_python_api_refuses_an_idempotency_key_reused_for_another_call(aq: ActionQ) -> None:
    cid = aq.create_conversation().id
    first = aq.submit_action(cid, "terminal", {"command": "date"}, idempotency_key="k")
    same = aq.submit_action(cid, "terminal", {"command": "date"}, idempotency_key="k")
    assert same.id == first.id
    with pytest.raises(IdempotencyConflict, match=first.id) as refused:
        aq.submit_action(cid, "terminal", {"command": "ls"}, idempotency_key="k")
    assert isinstance(refused.value, ConflictError)
    with pytest.raises(IdempotencyConflict):
        aq.submit_action(cid, "read_file", {"command": "date"}, idempotency_key="k")
    assert [e.kind for e in aq.list_events(cid).items].count("ActionEvent") == 1


def _actions_url(up: UpProcess) -> str:
    cid = httpx.post(up.url + "/api/conversations", headers=up.headers()).json()["id"]
    return f"{up.url}/api/conversations/{cid}/actions"


def test_a_lone_surrogate_is_a_422_that_says_where(stack: UpProcess) -> None:
    url = _actions_url(stack)
    for body, says in (
        ('{"tool": "terminal", "arguments": {"command": "echo \\ud800"}}', "arguments.command"),
        ('{"tool": "terminal", "arguments": {"command": "ls", "\\ud800": 1}}', "arguments.<key>"),
        ('{"tool": "terminal", "arguments": {"command": "ls"}, "thought": "\\udfff"}', "thought"),
    ):
        response = httpx.post(
            url, content=body, headers=stack.headers() | {"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert says in response.json()["error"]["message"], response.text
    events = httpx.get(url.replace("/actions", "/events/page"), headers=stack.headers()).json()
    assert events["items"] == []


def test_the_key_is_checked_before_the_body(stack: UpProcess) -> None:
    url = _actions_url(stack)
    for headers in ({}, {"X-Session-API-Key": "wrong"}):
        for content in (b'{"tool": ', b"x" * 100_000, b'{"tool": "terminal"}'):
            response = httpx.post(
                url, content=content, headers=headers | {"content-type": "application/json"}
            )
            assert response.status_code == 401, (headers, content[:20], response.text)
            assert response.json()["error"]["code"] == "unauthorized"


def test_a_chunked_body_over_the_limit_is_a_413(stack: UpProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"tool": "terminal", "arguments": {"command": "'
        for _ in range(100):
            yield b"x" * 1024  # 100 KiB in all, over the stack's 64 KiB
        yield b'"}}'

    response = httpx.post(
        _actions_url(stack),
        content=chunks(),
        headers=stack.headers() | {"content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and "ACTIONQ_API_MAX_BODY_BYTES" in error["message"]


def test_malformed_json_says_where_and_a_missing_content_type_is_named(stack: UpProcess) -> None:
    url = _actions_url(stack)
    json_type = {"content-type": "application/json"}
    malformed = httpx.post(
        url, content=b'{"tool": "terminal",\n "arguments": {', headers=stack.headers() | json_type
    )
    assert malformed.status_code == 422
    message = malformed.json()["error"]["message"]
    assert message.startswith("malformed JSON at line 2, column 16 (character 36): "), message
    assert "Content-Type" not in message
    untyped = httpx.post(
        url, content=b'{"tool": "terminal", "arguments": {}}', headers=stack.headers()
    )
    assert untyped.status_code == 422
    assert "Content-Type: application/json" in untyped.json()["error"]["message"]


def test_head_health(stack: UpProcess) -> None:
    response = httpx.head(stack.url + "/health")
    assert response.status_code == 200 and response.content == b""


def test_docs_work_offline_and_can_authorize(stack: UpProcess) -> None:
    page = httpx.get(stack.url + "/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    assert not [u for u in urls if "//" in u], urls  # nothing from another host
    for asset in urls:
        assert httpx.get(stack.url + asset).status_code == 200, asset
    redoc = httpx.get(stack.url + "/redoc").text
    assert "//" not in "".join(re.findall(r"""src=['"]([^'"]+)['"]""", redoc))

    schema = httpx.get(stack.url + "/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == schemes["APIKeyHeader"] | {
        "type": "apiKey", "in": "header", "name": "X-Session-API-Key",
    }  # fmt: skip
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    listed = schema["paths"]["/api/conversations"]["get"]["security"]
    assert {"APIKeyHeader": []} in listed and {"HTTPBearer": []} in listed
    assert "security" not in schema["paths"]["/health"]["get"]


def test_metrics_name_every_route_and_count_refused_streams(stack: UpProcess) -> None:
    httpx.get(stack.url + "/docs")
    httpx.get(f"{stack.url}/api/conversations/nope/events/stream", headers=stack.headers())
    text = httpx.get(stack.url + "/metrics", headers=stack.headers()).text
    assert 'route="/docs",status="200"' in text
    assert 'route="/api/conversations/{conversation_id}/events/stream",status="404"' in text, text


def test_conversation_ids_start_alphanumeric_and_creating_twice_is_200(stack: UpProcess) -> None:
    url = stack.url + "/api/conversations"
    for bad in (".", "..", "-rf", "_x", ".hidden"):
        refused = httpx.post(url, headers=stack.headers(), json={"conversation_id": bad})
        assert refused.status_code == 422, (bad, refused.text)
    first = httpx.post(url, headers=stack.headers(), json={"conversation_id": "a.b-c_1"})
    again = httpx.post(url, headers=stack.headers(), json={"conversation_id": "a.b-c_1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    client = stack.client()
    try:
        listed = client.search_conversations(limit=100)
        assert listed["next_page_id"] is None  # this module makes fewer
        ids = [c["id"] for c in listed["items"]]
        assert "a.b-c_1" in ids and all(cid[0].isalnum() for cid in ids), ids
    finally:
        client.close()
    assert httpx.post(url, headers=stack.headers()).status_code == 201


def test_an_action_shows_iso_times_and_no_internal_fields(stack: UpProcess) -> None:
    url = _actions_url(stack)
    created = httpx.post(
        url, headers=stack.headers(), json={"tool": "terminal", "arguments": {"command": "true"}}
    ).json()
    action_url = f"{stack.url}/api/actions/{created['id']}"

    def finished() -> dict[str, Any] | None:
        action: dict[str, Any] = httpx.get(action_url, headers=stack.headers()).json()
        return action if action["finished_at"] else None

    action = wait_for(finished, 30, what="the action to finish")
    for shown in (created, action):
        assert not {"fence", "pgid"} & set(shown), shown
    for field in ("created_at", "claimed_at", "finished_at"):
        assert datetime.fromisoformat(action[field]).tzinfo is not None, (field, action)
    schema = httpx.get(stack.url + "/openapi.json").json()["components"]["schemas"]
    assert "fence" not in schema["ActionResponse"]["properties"]


def test_invalid_arguments_messages_carry_no_urls(stack: UpProcess) -> None:
    refused = httpx.post(
        _actions_url(stack), headers=stack.headers(),
        json={"tool": "terminal", "arguments": {"cmd": "ls"}},
    )  # fmt: skip
    message = refused.json()["error"]["message"]
    assert refused.status_code == 422 and "command" in message
    assert "http" not in message and "For further information" not in message, message
    # The same helper words a worker's AgentErrorEvent (tasks/execution.py).
    with pytest.raises(ValidationError) as raised:
        TerminalArgs.model_validate({"cmd": "ls"})
    assert "errors.pydantic.dev" in str(raised.value)
    text = validation_error_text(raised.value)
    assert "command" in text and "http" not in text
