"""OpenHands' listing, counting, batch and delete routes, and its event
search, against a real `actionq up` (embedded server, real worker, uvicorn)
started as a subprocess: every page followed to its end, every event once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.events import count_lines
from tests.helpers import wait_for
from tests.up_process import UpProcess


class Api:
    """The routes over real HTTP; every call checks its status."""

    def __init__(self, up: UpProcess) -> None:
        self.up = up

    def request(
        self, method: str, path: str, expect: int = 200, params: Any = None, json: Any = None
    ) -> Any:
        response = httpx.request(
            method, self.up.url + path, headers=self.up.headers(), params=params, json=json,
            timeout=30,
        )  # fmt: skip
        assert response.status_code == expect, (method, path, params, response.text)
        return response.json()

    def create(self, body: dict[str, Any] | None = None) -> str:
        cid: str = self.request("POST", "/api/conversations", 201, json=body)["id"]
        return cid

    def status(self, cid: str) -> str:
        return str(self.request("GET", f"/api/conversations/{cid}")["execution_status"])

    def wait_status(self, cid: str, status: str) -> None:
        wait_for(lambda: self.status(cid) == status, 30, 0.1, f"{cid} to be {status}")

    def submit(self, cid: str, tool: str, arguments: dict[str, Any]) -> str:
        body = {"tool": tool, "arguments": arguments}
        action_id: str = self.request("POST", f"/api/conversations/{cid}/actions", 201, json=body)[
            "id"
        ]
        return action_id

    def pages(self, path: str, **params: Any) -> list[list[dict[str, Any]]]:
        """Every page of an OpenHands search, following ``next_page_id``."""
        pages: list[list[dict[str, Any]]] = []
        page_id = None
        while True:
            query = params | ({"page_id": page_id} if page_id is not None else {})
            page = self.request("GET", path, params=query)
            pages.append(page["items"])
            page_id = page["next_page_id"]
            if page_id is None:
                return pages
            assert len(pages) < 1000, "next_page_id never ends"

    def conversations(self, **params: Any) -> list[dict[str, Any]]:
        return [c for page in self.pages("/api/conversations/search", **params) for c in page]

    def envelopes(self, cid: str) -> list[dict[str, Any]]:
        page = self.request("GET", f"/api/conversations/{cid}/events/page?limit=1000")
        assert page["next_after_seq"] is None
        items: list[dict[str, Any]] = page["items"]
        return items


def crashed_conversation(api: Api, tmp_path: Path, name: str) -> str:
    cid = api.create()
    api.submit(cid, "kill_own_process", {"marker_file": str(tmp_path / name)})
    api.wait_status(cid, "error")
    return cid


def test_search_pages_newest_first_and_filters_by_status(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    idle = [api.create() for _ in range(3)]
    error = crashed_conversation(api, tmp_path, "a")
    idle.append(api.create())
    mine = [*idle[:3], error, idle[3]]  # in creation order

    pages = api.pages("/api/conversations/search", limit=2)
    assert all(len(page) <= 2 for page in pages) and len(pages) >= 3
    listed = [c["id"] for page in pages for c in page]
    assert len(listed) == len(set(listed))  # no conversation twice
    assert [cid for cid in listed if cid in mine] == mine[::-1]  # newest first
    times = [c["created_at"] for page in pages for c in page]
    assert times == sorted(times, reverse=True)
    assert listed == [c["id"] for c in api.conversations()]  # the same with pages of 100
    oldest_first = [c["id"] for c in api.conversations(limit=2, sort_order="CREATED_AT")]
    assert oldest_first == listed[::-1]

    errors = api.conversations(limit=1, status="error")
    assert {c["execution_status"] for c in errors} == {"error"}
    assert error in [c["id"] for c in errors]
    assert not set(idle) & {c["id"] for c in errors}
    idle_listed = [c["id"] for c in api.conversations(limit=2, status="idle")]
    assert [cid for cid in idle_listed if cid in mine] == idle[::-1]
    api.request("GET", "/api/conversations/search", 422, params={"limit": 101})
    api.request("GET", "/api/conversations/search", 422, params={"status": "sleeping"})


def test_count_with_and_without_a_status(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    crashed_conversation(api, tmp_path, "b")
    before = api.request("GET", "/api/conversations/count")
    assert before == len(api.conversations())
    for status in ("idle", "error", "running"):
        counted = api.request("GET", "/api/conversations/count", params={"status": status})
        assert counted == len(api.conversations(status=status)), status
    assert api.request("GET", "/api/conversations/count", params={"status": "error"}) >= 1
    api.create()
    assert api.request("GET", "/api/conversations/count") == before + 1


def test_batch_get_answers_in_order_with_null_for_an_unknown_id(stack: UpProcess) -> None:
    api = Api(stack)
    first, second = api.create(), api.create()
    found = api.request(
        "GET", "/api/conversations", params={"ids": [second, "no-such-conversation", first]}
    )
    assert found == [
        api.request("GET", f"/api/conversations/{second}"),
        None,
        api.request("GET", f"/api/conversations/{first}"),
    ]
    api.request("GET", "/api/conversations", 422, params={"ids": [first] * 101})


def test_delete_is_refused_while_running_then_removes_the_conversation_and_its_events(
    stack: UpProcess, tmp_path: Path
) -> None:
    api = Api(stack)
    cid = api.create({"conversation_id": "to-delete"})
    marker = tmp_path / "running"
    api.submit(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60})
    wait_for(lambda: count_lines(marker) == 1, 30, what="the action to start")
    refused = api.request("DELETE", f"/api/conversations/{cid}", 409)
    assert refused["error"]["code"] == "invalid_transition"
    assert "running" in refused["error"]["message"]
    assert api.status(cid) == "running"  # nothing was deleted

    assert api.request("POST", f"/api/conversations/{cid}/interrupt") == {"success": True}
    wait_for(
        lambda: any(e["event"]["kind"] == "AgentErrorEvent" for e in api.envelopes(cid)),
        30, what="the call to be cancelled",
    )  # fmt: skip
    assert api.status(cid) == "paused"
    count = api.request("GET", "/api/conversations/count")
    assert api.request("DELETE", f"/api/conversations/{cid}") == {"success": True}

    missing = api.request("GET", f"/api/conversations/{cid}", 404)
    assert missing["error"]["code"] == "conversation_not_found"
    api.request("GET", f"/api/conversations/{cid}/events/page", 404)
    api.request("GET", f"/api/conversations/{cid}/events/search", 404)
    api.request("DELETE", f"/api/conversations/{cid}", 404)
    assert api.request("GET", "/api/conversations", params={"ids": [cid]}) == [None]
    assert cid not in [c["id"] for c in api.conversations()]
    assert api.request("GET", "/api/conversations/count") == count - 1
    # The id can be used again: a new conversation, with none of the old events.
    assert api.create({"conversation_id": cid}) == cid
    assert api.envelopes(cid) == []


def test_run_pause_and_interrupt_answer_success(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    cid = api.create()
    success = {"success": True}
    assert api.request("POST", f"/api/conversations/{cid}/pause") == success
    assert api.status(cid) == "paused"
    assert api.request("POST", f"/api/conversations/{cid}/run") == success
    assert api.status(cid) == "idle"  # nothing queued
    marker = tmp_path / "long"
    api.submit(cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60})
    wait_for(lambda: count_lines(marker) == 1, 30, what="the action to start")
    assert api.request("POST", f"/api/conversations/{cid}/interrupt") == success
    assert api.status(cid) == "paused"
    # resume is actionq's own route: it answers the conversation's info.
    resumed = api.request("POST", f"/api/conversations/{cid}/resume")
    assert resumed["id"] == cid and resumed["execution_status"] in ("idle", "running")


def history(api: Api, tmp_path: Path, calls: int) -> str:
    """A conversation of ``calls`` commands, one of which fails, all ended."""
    cid = api.create()
    for i in range(calls):
        api.submit(cid, "terminal", {"command": f"echo call-{i}"})
    api.submit(cid, "raise_error", {"message": "boom"})
    api.wait_status(cid, "idle")
    wait_for(
        lambda: sum(e["event"]["kind"] == "AgentErrorEvent" for e in api.envelopes(cid)) == 1,
        30, what="the last call to end",
    )  # fmt: skip
    return cid


def test_event_search_pages_through_every_event_once_in_order(
    stack: UpProcess, tmp_path: Path
) -> None:
    api = Api(stack)
    cid = history(api, tmp_path, 4)
    everything = [e["event"] for e in api.envelopes(cid)]
    assert len(everything) >= 12

    pages = api.pages(f"/api/conversations/{cid}/events/search", limit=2)
    assert [len(page) for page in pages[:-1]] == [2] * (len(pages) - 1)
    assert [e for page in pages for e in page] == everything
    assert api.request("GET", f"/api/conversations/{cid}/events/count") == len(everything)
    api.request("GET", f"/api/conversations/{cid}/events/search", 422, params={"limit": 101})
    api.request("GET", "/api/conversations/nope/events/search", 404)


@pytest.mark.parametrize(
    ("name", "value"),
    [("kind", "ObservationEvent"), ("kind", "AgentErrorEvent"), ("source", "agent")],
)
def test_event_search_filters_by_kind_and_source(
    stack: UpProcess, tmp_path: Path, name: str, value: str
) -> None:
    api = Api(stack)
    cid = history(api, tmp_path, 3)
    expected = [e["event"] for e in api.envelopes(cid) if e["event"][name] == value]
    assert expected  # the filter has something to find

    pages = api.pages(f"/api/conversations/{cid}/events/search", limit=2, **{name: value})
    assert [e for page in pages for e in page] == expected
    counted = api.request("GET", f"/api/conversations/{cid}/events/count", params={name: value})
    assert counted == len(expected)


def test_event_search_newest_first_and_in_a_time_window(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    cid = history(api, tmp_path, 3)
    everything = [e["event"] for e in api.envelopes(cid)]
    path = f"/api/conversations/{cid}/events/search"

    newest_first = api.pages(path, limit=3, sort_order="TIMESTAMP_DESC")
    assert [e for page in newest_first for e in page] == everything[::-1]
    observations = [e for e in everything if e["kind"] == "ObservationEvent"]
    filtered = api.pages(path, limit=1, sort_order="TIMESTAMP_DESC", kind="ObservationEvent")
    assert [e for page in filtered for e in page] == observations[::-1]

    # [gte, lt): from the second observation up to, not including, the last event.
    window = {
        "timestamp__gte": observations[1]["timestamp"],
        "timestamp__lt": everything[-1]["timestamp"],
    }
    start = everything.index(observations[1])
    expected = [e for e in everything[start:-1] if e["timestamp"] < everything[-1]["timestamp"]]
    assert expected and [e for page in api.pages(path, limit=2, **window) for e in page] == expected
    assert api.request("GET", f"/api/conversations/{cid}/events/count", params=window) == len(
        expected
    )
    refused = api.request("GET", path, 422, params={"sort_order": "NEWEST"})
    assert "sort_order" in str(refused)


def test_one_event_by_id_and_several_at_once(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    cid = history(api, tmp_path, 1)
    events = [e["event"] for e in api.envelopes(cid)]
    for event in events:
        assert api.request("GET", f"/api/conversations/{cid}/events/{event['id']}") == event
    unknown = api.request("GET", f"/api/conversations/{cid}/events/no-such-event", 404)
    assert unknown["error"]["code"] == "not_found"
    api.request("GET", f"/api/conversations/nope/events/{events[0]['id']}", 404)
    # Another conversation's event is not this one's.
    other = history(api, tmp_path, 1)
    api.request("GET", f"/api/conversations/{other}/events/{events[0]['id']}", 404)

    ids = [events[-1]["id"], "no-such-event", events[0]["id"]]
    found = api.request("GET", f"/api/conversations/{cid}/events", params={"event_ids": ids})
    assert found == [events[-1], None, events[0]]
