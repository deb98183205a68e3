"""The console's conversation listing (actionq's own routes) against a real
`actionq up` over HTTP: paged newest first, every conversation once; the
status filter and totals agree with each conversation's own status through
create, run, a real crash (the worker killed), resume and delete; the crash
is on the row; unknown ids are 404 and a request without a key is 401."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import wait_for
from tests.up_process import UpProcess

LIST = "/api/console/conversations"
ROW_FIELDS = {"id", "execution_status", "created_at", "updated_at", "error"}


class Console:
    """The console's routes and the OpenHands routes it is checked against."""

    def __init__(self, up: UpProcess) -> None:
        self.up = up

    def request(self, method: str, path: str, expect: int = 200, **options: Any) -> Any:
        response = httpx.request(
            method, self.up.url + path, headers=self.up.headers(), timeout=30, **options
        )
        assert response.status_code == expect, (method, path, options, response.text)
        return response.json()

    def create(self) -> str:
        cid: str = self.request("POST", "/api/conversations", 201)["id"]
        return cid

    def row(self, cid: str) -> dict[str, Any]:
        row: dict[str, Any] = self.request("GET", f"{LIST}/{cid}")
        return row

    def pages(self, limit: int, status: str | None = None) -> list[dict[str, Any]]:
        """Every page of the listing, following next_page_id."""
        rows: list[dict[str, Any]] = []
        page_id = None
        for _ in range(1000):
            params: dict[str, Any] = {"limit": limit}
            if status is not None:
                params["status"] = status
            if page_id is not None:
                params["page_id"] = page_id
            page = self.request("GET", LIST, params=params)
            assert set(page) == {"items", "next_page_id", "total"}
            assert len(page["items"]) <= limit
            rows += page["items"]
            page_id = page["next_page_id"]
            if page_id is None:
                return rows
        raise AssertionError("next_page_id never ends")

    def total(self, status: str | None = None) -> int:
        params = {"limit": 1} | ({"status": status} if status else {})
        total: int = self.request("GET", LIST, params=params)["total"]
        return total

    def assert_filters_agree_with_each_status(self) -> None:
        """Each status's listing is exactly the conversations whose own status it is."""
        rows = self.pages(100)
        assert len({r["id"] for r in rows}) == len(rows) == self.total()
        for status in {r["execution_status"] for r in rows} | {"error", "idle", "running"}:
            own = {r["id"] for r in rows if self.row(r["id"])["execution_status"] == status}
            listed = self.pages(100, status)
            assert {r["id"] for r in listed} == own, status
            assert all(r["execution_status"] == status for r in listed)
            assert self.total(status) == len(own)
            count = self.request("GET", "/api/conversations/count", params={"status": status})
            assert count == len(own)


def test_pages_list_every_conversation_once_newest_first(stack: UpProcess) -> None:
    console = Console(stack)
    before = {r["id"] for r in console.pages(100)}
    created = [console.create() for _ in range(7)]

    rows = console.pages(3)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == console.total()
    assert [i for i in ids if i in created] == created[::-1]  # newest first
    assert set(ids) == before | set(created)
    assert all(set(r) == ROW_FIELDS for r in rows)
    row = next(r for r in rows if r["id"] == created[0])
    assert row["execution_status"] == "idle" and row["error"] is None
    assert row["updated_at"] >= row["created_at"]
    # The row is the one the conversation's own route describes.
    info = console.request("GET", f"/api/conversations/{created[0]}")
    assert (row["created_at"], row["updated_at"]) == (info["created_at"], info["updated_at"])


def test_status_filter_follows_a_real_crash_resume_and_delete(stack: UpProcess) -> None:
    console = Console(stack)
    cid = console.create()
    kept = console.create()
    console.assert_filters_agree_with_each_status()

    action = console.request(
        "POST",
        f"/api/conversations/{cid}/actions",
        201,
        json={"tool": "terminal", "arguments": {"command": "kill -9 $PPID"}},
    )
    wait_for(lambda: console.row(cid)["execution_status"] == "error", 30, 0.1, "the crash")
    row = console.row(cid)
    error = row["error"]
    assert error["cause"] == "worker_lost" and error["signal"] == 9
    assert error["action_id"] == action["id"]
    crash = console.request("GET", f"/api/conversations/{cid}/events/page", params={"limit": 1000})[
        "items"
    ]
    [agent_error] = [e for e in crash if e["event"]["kind"] == "AgentErrorEvent"]
    assert error["at"] == agent_error["event"]["timestamp"]
    assert error["exitcode"] == agent_error["detail"].get("exitcode")
    assert row["updated_at"] >= error["at"]
    assert cid in {r["id"] for r in console.pages(50, "error")}
    console.assert_filters_agree_with_each_status()

    console.request("POST", f"/api/conversations/{cid}/resume")
    wait_for(lambda: console.row(cid)["execution_status"] == "idle", 30, 0.1, "the resume")
    assert console.row(cid)["error"] is None
    assert cid not in {r["id"] for r in console.pages(50, "error")}
    console.assert_filters_agree_with_each_status()

    total = console.total()
    idle = console.total("idle")
    console.request("DELETE", f"/api/conversations/{cid}")
    assert console.total() == total - 1 and console.total("idle") == idle - 1
    assert cid not in {r["id"] for r in console.pages(100)}
    assert kept in {r["id"] for r in console.pages(100, "idle")}
    console.assert_filters_agree_with_each_status()


def test_unknown_ids_and_bad_queries_are_refused(stack: UpProcess) -> None:
    console = Console(stack)
    assert console.request("GET", f"{LIST}/no-such-conversation", 404)["error"]["code"]
    console.request("GET", LIST, 422, params={"limit": 101})
    console.request("GET", LIST, 422, params={"status": "sleeping"})
    console.request("GET", LIST, 422, params={"page_id": "not-a-page"})
    for path in (LIST, f"{LIST}/x"):
        assert httpx.get(stack.url + path, timeout=10).status_code == 401
