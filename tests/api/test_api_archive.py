"""Archived conversations over HTTP, against a real `actionq up` archiving
to the shared PostgreSQL (a schema of its own, dropped afterwards): the
API serves the archived copy with the very events Redis served, and every
change is a 409 that stores nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from actionq.archive import PostgresSink
from tests.helpers import wait_for
from tests.postgres import POSTGRES_URL, own_schema, run_sql
from tests.up_process import UpProcess, client_of, start_up, stop_up

# Long enough to read everything before it is archived, on a busy machine too.
ARCHIVE_AFTER_SECONDS = 8


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with own_schema("aq_archive_api") as name:
        yield name


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, schema: str) -> Iterator[UpProcess]:
    base = tmp_path_factory.mktemp("up")
    up = start_up(
        base / ".actionq",
        base / "up.log",
        ACTIONQ_ARCHIVE_URL=POSTGRES_URL,
        ACTIONQ_ARCHIVE_PG_SCHEMA=schema,
        ACTIONQ_ARCHIVE_AFTER_SECONDS=str(ARCHIVE_AFTER_SECONDS),
        ACTIONQ_ARCHIVE_STATUSES="idle,finished",
        ACTIONQ_ARCHIVE_INTERVAL="0.5",
    )
    yield up
    stop_up(up)


def call(up: UpProcess, method: str, path: str, expect: int, **options: Any) -> Any:
    response = httpx.request(method, up.url + path, headers=up.headers(), timeout=30, **options)
    assert response.status_code == expect, (method, path, response.text)
    return response.json()


def everything_read(up: UpProcess, cid: str, event_id: str) -> dict[str, Any]:
    """What a client reads of a conversation, every read route."""
    base = f"/api/conversations/{cid}"
    return {
        "info": call(up, "GET", base, 200),
        "batch": call(up, "GET", "/api/conversations", 200, params={"ids": [cid]}),
        "search": call(up, "GET", base + "/events/search", 200),
        "search_desc": call(
            up, "GET", base + "/events/search", 200, params={"sort_order": "TIMESTAMP_DESC"}
        ),
        "second_page": call(up, "GET", base + "/events/search", 200, params={"page_id": "2"}),
        "by_kind": call(
            up, "GET", base + "/events/search", 200, params={"kind": "ObservationEvent"}
        ),
        "page": call(up, "GET", base + "/events/page", 200, params={"limit": 1000}),
        "event": call(up, "GET", f"{base}/events/{event_id}", 200),
        "events": call(up, "GET", base + "/events", 200, params={"event_ids": [event_id]}),
        "count": call(up, "GET", base + "/events/count", 200),
    }


def without_archived_flag(read: dict[str, Any]) -> dict[str, Any]:
    read = dict(read)
    read["info"] = {k: v for k, v in read["info"].items() if k != "archived"}
    read["batch"] = [{k: v for k, v in i.items() if k != "archived"} for i in read["batch"]]
    return read


def streamed(up: UpProcess, cid: str, after_seq: int = 0) -> list[dict[str, Any]]:
    """The SSE stream's events, read until the server ends it."""
    response = httpx.get(
        f"{up.url}/api/conversations/{cid}/events/stream",
        headers=up.headers(),
        params={"after_seq": after_seq},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


def redis_keys(up: UpProcess, cid: str) -> list[str]:
    with client_of(up) as aq:
        return sorted(str(k) for k in aq.store.redis.scan_iter(match=f"*{{{cid}}}*"))


def test_archived_conversation_reads_the_same_and_refuses_every_change(
    stack: UpProcess, schema: str, tmp_path: Path
) -> None:
    up = stack
    cid = call(up, "POST", "/api/conversations", 201, json={})["id"]
    call(
        up,
        "POST",
        f"/api/conversations/{cid}/events",
        200,
        json={"role": "user", "content": [{"type": "text", "text": "hi"}]},
    )
    actions = [
        call(up, "POST", f"/api/conversations/{cid}/actions", 201, json=body)["id"]
        for body in ({"tool": "think", "arguments": {"thought": f"step {n}"}} for n in range(3))
    ]
    wait_for(
        lambda: call(up, "GET", f"/api/conversations/{cid}", 200)["execution_status"] == "idle"
        and call(up, "GET", f"/api/conversations/{cid}/events/count", 200) >= 8,
        30, 0.1, "the actions to end",
    )  # fmt: skip
    # A paused conversation is not archived (only idle and finished are).
    paused = call(up, "POST", "/api/conversations", 201, json={})["id"]
    call(up, "POST", f"/api/conversations/{paused}/pause", 200)
    events = call(up, "GET", f"/api/conversations/{cid}/events/search", 200)["items"]
    before = everything_read(up, cid, events[2]["id"])
    assert before["info"]["archived"] is False and redis_keys(up, cid)
    actions_before = [call(up, "GET", f"/api/actions/{a}", 200) for a in actions]
    assert [a["state"] for a in actions_before] == ["done"] * 3

    wait_for(
        lambda: call(up, "GET", f"/api/conversations/{cid}", 200)["archived"],
        ARCHIVE_AFTER_SECONDS + 30, 0.25, "the conversation to be archived",
    )  # fmt: skip
    assert redis_keys(up, cid) == []
    after = everything_read(up, cid, events[2]["id"])
    assert after["info"]["archived"] is True
    assert without_archived_flag(after) == without_archived_flag(before)
    # Its actions read the same too, from the archive.
    assert [call(up, "GET", f"/api/actions/{a}", 200) for a in actions] == actions_before
    assert run_sql(f"SELECT status FROM {schema}.conversations WHERE id = %s", cid) == [("idle",)]
    # Its event stream is its events, then the end (nothing is live any more).
    assert streamed(up, cid) == before["page"]["items"]
    assert streamed(up, cid, after_seq=3) == before["page"]["items"][3:]
    # OpenHands' socket: the snapshot (archived), then the history from the archive.
    socket = up.url.replace("http://", "ws://", 1) + f"/sockets/events/{cid}?resend_all=true"
    with connect(socket, additional_headers=up.headers(), open_timeout=10) as ws:
        snapshot = json.loads(ws.recv(timeout=20))
        assert snapshot["key"] == "full_state" and snapshot["value"]["archived"] is True
        replayed = [json.loads(ws.recv(timeout=20)) for _ in before["search"]["items"]]
    assert replayed == before["search"]["items"]

    base = f"/api/conversations/{cid}"
    changes: list[tuple[str, str, Any]] = [
        ("POST", base + "/actions", {"tool": "think", "arguments": {"thought": "no"}}),
        ("POST", base + "/events", {"role": "user", "content": [{"type": "text", "text": "no"}]}),
        ("POST", base + "/run", None),
        ("POST", base + "/pause", None),
        ("POST", base + "/interrupt", None),
        ("POST", base + "/resume", None),
        ("POST", base + "/events/respond_to_confirmation", {"accept": True}),
        ("POST", base + "/confirmation_policy", {"policy": {"kind": "AlwaysConfirm"}}),
        ("DELETE", base, None),
        ("POST", "/api/conversations", {"conversation_id": cid}),
        ("POST", f"/api/actions/{actions[0]}/retry", {"force": True}),
    ]
    count = call(up, "GET", "/api/conversations/count", 200)
    for method, path, body in changes:
        error = call(up, method, path, 409, json=body)["error"]
        assert error["code"] == "conversation_archived", (path, error)
        assert "archived; read-only" in error["message"]
    assert redis_keys(up, cid) == []
    assert call(up, "GET", "/api/conversations/count", 200) == count
    assert without_archived_flag(
        everything_read(up, cid, events[2]["id"])
    ) == without_archived_flag(before)
    sink = PostgresSink(POSTGRES_URL, schema)
    try:
        archived = sink.read(cid)
    finally:
        sink.close()
    assert archived is not None and len(archived.events) == before["count"]
    # The paused one is still in Redis, not archived.
    assert call(up, "GET", f"/api/conversations/{paused}", 200)["archived"] is False
    assert redis_keys(up, paused)
