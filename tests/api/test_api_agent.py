"""The agent loop over HTTP (OpenHands' routes): create with an agent and a
first message, messages, run, pause, interrupt, confirmation, policy; against
a real `actionq up` (its tool worker and its agent worker) as a subprocess."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.events import text_of, tool_result
from tests.helpers import wait_for
from tests.up_process import UpProcess


class Api:
    """The routes as a client calls them: every call checks its status."""

    def __init__(self, up: UpProcess) -> None:
        self.up = up

    def request(self, method: str, path: str, expect: int = 200, json: Any = None) -> Any:
        response = httpx.request(
            method, self.up.url + path, headers=self.up.headers(), json=json, timeout=30
        )
        assert response.status_code == expect, (method, path, response.text)
        return response.json()

    def create(self, body: dict[str, Any], expect: int = 201) -> Any:
        return self.request("POST", "/api/conversations", expect, body)

    def post(self, cid: str, verb: str, body: Any = None, expect: int = 200) -> Any:
        return self.request("POST", f"/api/conversations/{cid}/{verb}", expect, body)

    def get(self, cid: str) -> dict[str, Any]:
        conversation: dict[str, Any] = self.request("GET", f"/api/conversations/{cid}")
        return conversation

    def events(self, cid: str) -> list[dict[str, Any]]:
        """Every event in OpenHands' JSON, by OpenHands' search."""
        events: list[dict[str, Any]] = []
        query = "limit=100"
        while True:
            page = self.request("GET", f"/api/conversations/{cid}/events/search?{query}")
            events += page["items"]
            if page["next_page_id"] is None:
                return events
            query = f"limit=100&page_id={page['next_page_id']}"

    def envelopes(self, cid: str) -> list[dict[str, Any]]:
        """Every event in actionq's envelope (seq, a crash's detail)."""
        page = self.request("GET", f"/api/conversations/{cid}/events/page?limit=1000")
        assert page["next_after_seq"] is None
        items: list[dict[str, Any]] = page["items"]
        return items

    def status(self, cid: str) -> str:
        return str(self.get(cid)["execution_status"])

    def wait_status(self, cid: str, status: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            conversation = self.get(cid)
            return conversation if conversation["execution_status"] == status else None

        return wait_for(reached, timeout, 0.1, f"conversation {cid} to be {status}")

    def conversation_ids(self) -> list[str]:
        """Every conversation's id, oldest first."""
        ids: list[str] = []
        query = "sort_order=CREATED_AT"
        while True:
            page = self.request("GET", f"/api/conversations/search?{query}")
            ids += [c["id"] for c in page["items"]]
            if page["next_page_id"] is None:
                return ids
            query = f"sort_order=CREATED_AT&page_id={page['next_page_id']}"


def scripted(*turns: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "scripted", "turns": list(turns), **extra}


def mark(marker: Path, line: str, seconds: float = 0) -> dict[str, Any]:
    arguments = {"marker_file": str(marker), "line": line, "seconds": seconds}
    return {"tool_calls": [{"tool": "sleep_after_mark", "arguments": arguments}]}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def test_an_initial_message_runs_a_scripted_agent_to_finished(stack: UpProcess) -> None:
    api = Api(stack)
    agent = scripted(
        {"tool_calls": [{"tool": "terminal", "arguments": {"command": "echo from-the-agent"}}]},
        {"text": "I saw: {last_result}"},
    )
    message = {"role": "user", "content": [{"type": "text", "text": "say"}, {"text": "it"}]}
    created = api.create({"agent": agent, "initial_message": message})
    assert created["agent"]["kind"] == "scripted"
    # sent with run, as OpenHands does
    assert created["execution_status"] in ("running", "finished"), created

    finished = api.wait_status(created["id"], "finished")
    assert finished["iteration"] >= 2 and finished["pending_confirmation"] == 0
    events = api.events(created["id"])
    first = events[0]
    assert first["kind"] == "MessageEvent" and first["source"] == "user"
    assert first["llm_message"] == {
        "role": "user",
        "content": [{"type": "text", "text": "say\nit"}],
    }
    (observation,) = [e for e in events if e["kind"] == "ObservationEvent"]
    assert observation["observation"]["kind"] == "TerminalObservation"
    assert text_of(observation["observation"]["content"]) == "from-the-agent\n"
    assert observation["observation"]["exit_code"] == 0
    answer = events[-2] if events[-1]["kind"] == "ConversationStateUpdateEvent" else events[-1]
    assert answer["kind"] == "MessageEvent" and answer["source"] == "agent"
    assert "from-the-agent" in text_of(answer["llm_message"]["content"])
    envelopes = api.envelopes(created["id"])
    assert [e["seq"] for e in envelopes] == list(range(1, len(events) + 1))
    assert [e["event"] for e in envelopes] == events


def test_a_message_without_run_waits_for_run(stack: UpProcess) -> None:
    api = Api(stack)
    cid = api.create({"agent": scripted({"text": "hello"})})["id"]
    assert api.status(cid) == "idle"

    assert api.post(cid, "events", {"role": "user", "content": "hi"}) == {"success": True}
    assert api.status(cid) == "idle"
    assert kinds(api.events(cid)) == ["MessageEvent"]

    assert api.post(cid, "run") == {"success": True}  # OpenHands' answer
    assert api.status(cid) in ("running", "finished")
    api.wait_status(cid, "finished")
    answers = [e for e in api.events(cid) if e["kind"] == "MessageEvent"]
    assert [(a["source"], text_of(a["llm_message"]["content"])) for a in answers] == [
        ("user", "hi"),
        ("agent", "hello"),
    ]
    # A finished conversation's run is a no-op (as OpenHands): send a message first.
    assert api.post(cid, "run") == {"success": True}
    assert api.status(cid) == "finished"
    assert kinds(api.events(cid)).count("MessageEvent") == 2
    # A message brings it back to idle; with run the agent answers again
    # ("done": the script is over).
    assert api.post(cid, "events", {"content": "again", "run": True}) == {"success": True}
    api.wait_status(cid, "finished")
    said = [
        text_of(e["llm_message"]["content"]) for e in api.events(cid) if e["kind"] == "MessageEvent"
    ]
    assert said == ["hi", "hello", "again", "done"]


def test_only_user_messages_with_text_are_accepted(stack: UpProcess) -> None:
    api = Api(stack)
    cid = api.create({"agent": scripted({"text": "hello"})})["id"]
    for body in (
        {"role": "assistant", "content": "I did it"},
        {"role": "system", "content": "new rules"},
        {"content": ""},
        {"content": []},
        {"content": [{"type": "image", "image_urls": ["http://x/y.png"]}]},
        {"content": [{"type": "text", "text": "hi", "extra": 1}]},
        {"content": "hi", "run": "soon"},
        {"content": "hi", "sender": "x" * 257},
        {},
    ):
        refused = httpx.post(
            f"{stack.url}/api/conversations/{cid}/events", headers=stack.headers(), json=body
        )
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["code"] == "invalid_request"
    assert api.events(cid) == []
    assert api.status(cid) == "idle"
    api.post("nope", "events", {"content": "hi"}, expect=404)
    # OpenHands' `sender` and `cache_prompt` are accepted, and change nothing.
    sent = {"content": [{"type": "text", "text": "hi", "cache_prompt": True}], "sender": "me"}
    assert api.post(cid, "events", sent) == {"success": True}
    (message,) = api.events(cid)
    assert message["llm_message"]["content"] == [{"type": "text", "text": "hi"}]
    assert "sender" not in message


def test_confirmation_reject_then_accept(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    marker = tmp_path / "confirmed"
    agent = scripted(
        mark(marker, "x"),
        {"text": "rejected: {last_result}", **mark(marker, "y")},
        {"text": "all done"},
        confirmation_policy={"kind": "AlwaysConfirm"},
    )
    cid = api.create({"agent": agent, "initial_message": {"content": "careful"}})["id"]
    waiting = api.wait_status(cid, "waiting_for_confirmation")
    assert waiting["pending_confirmation"] == 1 and lines(marker) == []

    # Nothing else may start while calls wait: pause and run are not the way.
    api.post(cid, "pause", expect=409)
    rejected = api.post(
        cid, "events/respond_to_confirmation", {"accept": False, "reason": "not that one"}
    )
    assert rejected == {"success": True}
    idle = api.get(cid)
    assert (idle["execution_status"], idle["pending_confirmation"]) == ("idle", 0)
    (rejection,) = [e for e in api.events(cid) if e["kind"] == "UserRejectObservation"]
    assert rejection["rejection_reason"] == "not that one"
    refused = api.post(cid, "events/respond_to_confirmation", {"accept": True}, expect=409)
    assert refused["error"]["code"] == "invalid_transition"

    api.post(cid, "run")
    api.wait_status(cid, "waiting_for_confirmation")
    second = [e for e in api.events(cid) if e["kind"] == "ActionEvent"][-1]
    assert "rejected: Action rejected: not that one" in text_of(second["thought"])
    assert lines(marker) == []
    assert api.post(cid, "events/respond_to_confirmation", {"accept": True}) == {"success": True}
    api.wait_status(cid, "finished")
    assert lines(marker) == ["y"]  # the rejected call never ran; the accepted one once


def test_the_confirmation_policy_can_change(stack: UpProcess, tmp_path: Path) -> None:
    api = Api(stack)
    marker = tmp_path / "policy"
    agent = scripted(
        mark(marker, "a"), mark(marker, "b"), confirmation_policy={"kind": "AlwaysConfirm"}
    )
    cid = api.create({"agent": agent})["id"]
    never = {"policy": {"kind": "NeverConfirm"}}
    assert api.post(cid, "confirmation_policy", never) == {"success": True}
    api.post(cid, "events", {"content": "go", "run": True})
    api.wait_status(cid, "finished")
    assert lines(marker) == ["a", "b"]

    risky = {"policy": {"kind": "ConfirmRisky", "threshold": "LOW", "confirm_unknown": True}}
    assert api.post(cid, "confirmation_policy", risky) == {"success": True}
    for bad in (
        {"policy": {"kind": "SometimesConfirm"}},
        {"policy": {"kind": "ConfirmRisky", "threshold": "EXTREME"}},
        {"policy": {"kind": "AlwaysConfirm", "except": "ls"}},
        {"kind": "AlwaysConfirm"},
    ):
        api.post(cid, "confirmation_policy", bad, expect=422)
    plain = api.create({})["id"]  # no agent: no policy to set
    conflict = api.post(plain, "confirmation_policy", never, expect=409)
    assert "no agent" in conflict["error"]["message"]
    api.post("nope", "confirmation_policy", never, expect=404)


def test_run_while_running_is_409_and_interrupt_stops_the_call(
    stack: UpProcess, tmp_path: Path
) -> None:
    api = Api(stack)
    marker = tmp_path / "long"
    agent = scripted(mark(marker, "long", seconds=60), {"text": "after the interrupt"})
    cid = api.create({"agent": agent, "initial_message": {"content": "go"}})["id"]
    wait_for(lambda: lines(marker) == ["long"], 30, what="the long call to start")

    conflict = api.post(cid, "run", expect=409)
    assert conflict["error"]["code"] == "invalid_transition"
    assert "running" in conflict["error"]["message"]

    assert api.post(cid, "interrupt") == {"success": True}
    assert api.status(cid) == "paused"

    def cancelled() -> list[dict[str, Any]]:
        return [e for e in api.envelopes(cid) if e["event"]["kind"] == "AgentErrorEvent"]

    (error,) = wait_for(cancelled, 30, what="the running call to be cancelled")
    assert error["detail"]["cause"] == "cancelled"
    assert error["event"]["classification"]["error_id"] == "actionq.cancelled"
    assert api.status(cid) == "paused"
    api.post(cid, "run")
    api.wait_status(cid, "finished")
    assert lines(marker) == ["long"]  # the interrupted call was not run again


def test_pause_lets_the_call_in_flight_finish_and_starts_nothing_new(
    stack: UpProcess, tmp_path: Path
) -> None:
    api = Api(stack)
    marker = tmp_path / "paused"
    agent = scripted(mark(marker, "a", seconds=1.5), mark(marker, "b"))
    cid = api.create({"agent": agent, "initial_message": {"content": "go"}})["id"]
    wait_for(lambda: lines(marker) == ["a"], 30, what="the first call to start")
    assert api.post(cid, "pause") == {"success": True}
    assert api.status(cid) == "paused"

    def observed() -> list[dict[str, Any]]:
        return [e for e in api.events(cid) if e["kind"] == "ObservationEvent"]

    (observation,) = wait_for(observed, 30, what="the call in flight to finish")
    assert tool_result(observation["observation"])["line"] == "a"  # finished, not killed
    time.sleep(0.5)  # room for a next step that should not come
    assert api.status(cid) == "paused"
    assert kinds(api.events(cid)).count("ActionEvent") == 1 and lines(marker) == ["a"]

    api.post(cid, "run")
    api.wait_status(cid, "finished")
    assert lines(marker) == ["a", "b"]


def test_an_llm_agent_with_an_unknown_profile_is_400_and_stores_nothing(
    stack: UpProcess,
) -> None:
    api = Api(stack)
    before = api.conversation_ids()
    agent = {"kind": "llm", "model_profile": "no-such-profile"}
    for body in (
        {"agent": agent},
        {
            "conversation_id": "llm-unknown-profile",
            "agent": agent,
            "initial_message": {"content": "hi"},
        },
    ):
        refused = api.create(body, expect=400)
        assert refused["error"]["code"] == "bad_request"
        assert "no-such-profile" in refused["error"]["message"], refused
    assert api.conversation_ids() == before
    api.request("GET", "/api/conversations/llm-unknown-profile", expect=404)


def test_mistakes_in_what_actionq_reads_are_422_and_store_nothing(stack: UpProcess) -> None:
    api = Api(stack)
    before = api.conversation_ids()
    hello = scripted({"text": "hello"})
    for body in (
        {"conversation_id": "typo-2", "agent": hello | {"api_key": "sk-not-for-the-body"}},
        {
            "conversation_id": "typo-3",
            "agent": {"kind": "llm", "llm": {"api_key": "sk-not-for-the-body"}},
        },
        {
            "conversation_id": "typo-4",
            "agent": hello,
            "initial_message": {"content": "hi", "runs": True},
        },
        {
            "conversation_id": "typo-5",
            "agent": hello,
            "initial_message": {"role": "agent", "content": "hi"},
        },
        {"conversation_id": "typo-6", "agent": {"kind": "scripted", "turns": []}},
        {"conversation_id": "typo-7", "agent": {"kind": "robot"}},
        {"conversation_id": "typo-8", "agent": hello | {"max_iterations": 0}},
        {"conversation_id": "typo-9", "agent": hello, "max_iterations": 0},
        {"conversation_id": "typo-10", "confirmation_policy": {"kind": "SometimesConfirm"}},
    ):
        refused = api.create(body, expect=422)
        assert refused["error"]["code"] == "invalid_request", body
        assert "sk-not-for-the-body" not in str(refused)  # a key sent by mistake is not echoed
    cid = api.create({"agent": hello})["id"]
    for verb, body in (
        ("events", {"content": "hi", "to": "agent"}),
        ("events/respond_to_confirmation", {"accept": False, "why": "no"}),
        ("events/respond_to_confirmation", {}),
        ("confirmation_policy", {"policy": {"kind": "NeverConfirm"}, "now": True}),
    ):
        api.post(cid, verb, body, expect=422)
    # A cursor too long for Redis' integers (the fuzzer's find: it was a 500).
    huge = "62162418219055921447"
    for path in (
        f"/api/conversations/search?status=idle&page_id={huge}",
        f"/api/conversations/{cid}/events/search?page_id={huge}",
    ):
        assert api.request("GET", path, 422)["error"]["code"] == "invalid_request"
    assert api.conversation_ids() == [*before, cid]
    assert api.events(cid) == []
    assert api.status(cid) == "idle"


def test_unknown_fields_of_the_start_request_are_ignored_as_openhands_does(
    stack: UpProcess,
) -> None:
    """OpenHands' SDK sends fields for features of its own server: a field
    actionq does not know is ignored, as OpenHands' server ignores it."""
    api = Api(stack)
    created = api.create(
        {
            "conversation_id": "ignored-fields",
            "agnet": scripted({"text": "hello"}),  # a typo is ignored too: no agent
            "workspace": {"kind": "LocalWorkspace", "working_dir": "/"},
            "autotitle": True,
        }
    )
    assert created["id"] == "ignored-fields" and created["agent"] is None
    assert created["workspace"]["working_dir"] != "/"  # its own folder, not the client's


def test_features_actionq_lacks_are_400_and_store_nothing(stack: UpProcess) -> None:
    api = Api(stack)
    before = api.conversation_ids()
    hello = scripted({"text": "hello"})
    for field, value in (
        ("secrets", {"TOKEN": "sk-not-for-the-body"}),
        ("client_tools", [{"name": "browser"}]),
        ("plugins", [{"source": "github:x/y"}]),
        ("hook_config", {"stop": [{"command": "true"}]}),
    ):
        body = {"conversation_id": f"lacking-{field}", "agent": hello, field: value}
        refused = api.create(body, expect=400)
        assert refused["error"]["code"] == "bad_request"
        assert field in refused["error"]["message"], refused
        assert "sk-not-for-the-body" not in str(refused)
    assert api.conversation_ids() == before
