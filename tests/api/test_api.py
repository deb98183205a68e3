"""The HTTP API over real HTTP, against a real `actionq up` (embedded server,
real worker, uvicorn) started as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.events import count_lines, text_of
from tests.helpers import ROOT, wait_for
from tests.up_process import UpProcess, is_running, recorded_pid, start_up, stop_up


def collect_stream(
    up: UpProcess, conversation_id: str, until: Any, after_seq: int = 0
) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """Follow the SSE stream in a thread until ``until(events)`` is true."""
    events: list[dict[str, Any]] = []

    def run() -> None:
        client = up.client()
        try:
            for event in client.stream(conversation_id, after_seq):
                events.append(event)
                if until(events):
                    return
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, events


def test_crash_end_to_end_through_the_api(stack: UpProcess) -> None:
    client = stack.client()
    cid = client.create_conversation()["id"]
    marker = stack.data_dir.parent / "api-side-effect.log"

    def saw_error_status(events: list[dict[str, Any]]) -> bool:
        return any(e["event"].get("value") == "error" for e in events)

    thread, streamed = collect_stream(stack, cid, saw_error_status)
    wait_for(lambda: thread.is_alive(), 5, what="the stream to open")
    action = client.submit_action(
        cid,
        {"tool": "terminal", "arguments": {"command": f"echo ran >> {marker}; kill -9 $PPID"}},
    )
    thread.join(30)
    assert not thread.is_alive(), f"stream did not deliver the error: {streamed}"

    # Each message is the envelope /events/page has: the OpenHands event and,
    # beside it, its seq and a crash's detail.
    kinds = [(e["event"]["kind"], e["event"].get("value")) for e in streamed]
    action_at = kinds.index(("ActionEvent", None))
    error_at = kinds.index(("AgentErrorEvent", None))
    status_at = kinds.index(("ConversationStateUpdateEvent", "error"))
    assert action_at < error_at < status_at
    error = streamed[error_at]
    assert error["action_id"] == action["id"] and error["event"]["parent_id"] == action["id"]
    assert error["detail"]["cause"] == "worker_lost" and error["detail"]["signal"] == 9
    assert error["event"]["classification"]["error_id"] == "actionq.worker_lost"
    assert [e["seq"] for e in streamed] == list(range(1, len(streamed) + 1))
    assert client.get_conversation(cid)["execution_status"] == "error"
    # Streamed and paged, the events are the same envelopes.
    assert streamed == client.all_events(cid)[: len(streamed)]
    assert count_lines(marker) == 1
    client.close()


def test_sse_resume_with_last_event_id_has_no_gaps_or_duplicates(stack: UpProcess) -> None:
    client = stack.client()
    cid = client.create_conversation()["id"]
    for i in range(5):
        client.submit_action(cid, {"tool": "terminal", "arguments": {"command": f"echo {i}"}})
    wait_for(
        lambda: client.get_conversation(cid)["execution_status"] == "idle", 30, what="all 5 to run"
    )
    everything = client.all_events(cid)
    assert len(everything) >= 12

    first_thread, first = collect_stream(stack, cid, lambda ev: len(ev) >= 7)
    first_thread.join(10)
    assert [e["seq"] for e in first] == list(range(1, 8))

    resumed_thread, rest = collect_stream(
        stack, cid, lambda ev: ev[-1]["seq"] == everything[-1]["seq"], after_seq=first[-1]["seq"]
    )
    resumed_thread.join(10)
    assert first + rest == everything
    client.close()


PROTECTED = [
    ("GET", "/api/conversations"),
    ("POST", "/api/conversations"),
    ("GET", "/api/conversations/search"),
    ("GET", "/api/conversations/count"),
    ("GET", "/api/conversations/x"),
    ("DELETE", "/api/conversations/x"),
    ("POST", "/api/conversations/x/actions"),
    ("POST", "/api/conversations/x/resume"),
    ("POST", "/api/conversations/x/pause"),
    ("POST", "/api/conversations/x/run"),
    ("POST", "/api/conversations/x/interrupt"),
    ("POST", "/api/conversations/x/confirmation_policy"),
    ("GET", "/api/conversations/x/events"),
    ("POST", "/api/conversations/x/events"),
    ("GET", "/api/conversations/x/events/page"),
    ("GET", "/api/conversations/x/events/search"),
    ("GET", "/api/conversations/x/events/count"),
    ("GET", "/api/conversations/x/events/x"),
    ("POST", "/api/conversations/x/events/respond_to_confirmation"),
    ("GET", "/api/conversations/x/events/stream"),
    ("GET", "/api/actions/x"),
    ("POST", "/api/actions/x/retry"),
    ("GET", "/api/console/conversations"),
    ("GET", "/api/console/conversations/x"),
    ("GET", "/metrics"),
    ("GET", "/api/session"),
    ("POST", "/api/session"),
]
# Logging out needs no key (it only clears the cookie).
PUBLIC = {("GET", "/health"), ("DELETE", "/api/session")}


def test_every_protected_route_refuses_missing_and_wrong_keys(stack: UpProcess) -> None:
    schema = httpx.get(stack.url + "/openapi.json").json()
    documented = {
        (method.upper(), re.sub(r"\{[a-z_]+\}", "x", path))
        for path, ops in schema["paths"].items()
        for method in ops
    }
    assert documented - PUBLIC == set(PROTECTED)
    before = httpx.get(stack.url + "/metrics", headers=stack.headers()).text

    body = {"tool": "terminal", "arguments": {"command": "echo should-not-run"}}
    for headers in ({}, {"X-Session-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic " + stack.key}):  # fmt: skip
        for method, path in PROTECTED:
            response = httpx.request(method, stack.url + path, headers=headers, json=body)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"

    listed = all_conversations(stack)
    after = httpx.get(stack.url + "/metrics", headers=stack.headers()).text
    conversations_gauge = [
        ln for ln in after.splitlines() if ln.startswith("actionq_conversations ")
    ]
    assert conversations_gauge and float(conversations_gauge[0].split()[1]) == len(listed)
    assert "actionq_actions_submitted_total" in before
    submitted = [
        ln for ln in after.splitlines() if ln.startswith("actionq_actions_submitted_total")
    ]
    submitted_before = [
        ln for ln in before.splitlines() if ln.startswith("actionq_actions_submitted_total")
    ]
    assert submitted == submitted_before  # nothing was created by the refused requests
    # Both header styles work with the right key.
    search = stack.url + "/api/conversations/search"
    assert httpx.get(search, headers=stack.headers()).status_code == 200
    bearer = {"Authorization": f"Bearer {stack.key}"}
    assert httpx.get(search, headers=bearer).status_code == 200


def all_conversations(up: UpProcess) -> list[dict[str, Any]]:
    """Every conversation, through OpenHands' search (100 a page)."""
    client = up.client()
    found: list[dict[str, Any]] = []
    page_id = None
    try:
        while True:
            page = client.search_conversations(page_id)
            found += page["items"]
            page_id = page["next_page_id"]
            if page_id is None:
                return found
    finally:
        client.close()


def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(stack: UpProcess) -> None:
    h = stack.headers()
    cid = httpx.post(stack.url + "/api/conversations", headers=h).json()["id"]
    actions = f"{stack.url}/api/conversations/{cid}/actions"

    def post(content: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            actions,
            content=content,
            headers=h | {"content-type": "application/json"} | (headers or {}),
        )

    malformed = post(b'{"tool": "terminal", "arguments": {')
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "invalid_request"
    assert "JSON" in malformed.json()["error"]["message"]

    wrong_type = post(json.dumps({"tool": "terminal", "arguments": "ls"}))
    assert wrong_type.status_code == 422 and "arguments" in wrong_type.json()["error"]["message"]

    unknown = post(json.dumps({"tool": "rm_rf", "arguments": {}}))
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_tool"
    assert "terminal" in unknown.json()["error"]["message"]  # says what exists

    bad_args = post(json.dumps({"tool": "terminal", "arguments": {"cmd": "ls"}}))
    assert bad_args.status_code == 422 and bad_args.json()["error"]["code"] == "invalid_arguments"

    deep = post(
        '{"tool": "terminal", "arguments": {"command": "ls", "x": ' + "[" * 40 + "]" * 40 + "}}"
    )
    assert (
        deep.status_code == 422 and "ACTIONQ_MAX_ARGUMENTS_DEPTH" in deep.json()["error"]["message"]
    )
    deeper = post('{"tool": "terminal", "arguments": {"x": ' + "[" * 20_000 + "]" * 20_000 + "}}")
    assert deeper.status_code in (400, 422), deeper.text

    huge = post(json.dumps({"tool": "terminal", "arguments": {"command": "x" * 200_000}}))
    assert huge.status_code == 413
    assert "ACTIONQ_API_MAX_BODY_BYTES" in huge.json()["error"]["message"]

    missing = httpx.get(f"{stack.url}/api/conversations/nope", headers=h)
    assert (
        missing.status_code == 404 and missing.json()["error"]["code"] == "conversation_not_found"
    )
    conflict = httpx.post(f"{stack.url}/api/conversations/{cid}/resume", headers=h)
    assert conflict.status_code == 409 and "idle" in conflict.json()["error"]["message"]

    # Nothing above created an action, and the server still serves.
    events = httpx.get(f"{stack.url}/api/conversations/{cid}/events/page", headers=h).json()
    assert events["items"] == []
    ok = post(json.dumps({"tool": "terminal", "arguments": {"command": "echo fine"}}))
    assert ok.status_code == 201
    assert httpx.get(stack.url + "/health").status_code == 200


def test_idempotent_post_returns_the_same_action(stack: UpProcess) -> None:
    h = stack.headers()
    cid = httpx.post(stack.url + "/api/conversations", headers=h).json()["id"]
    marker = stack.data_dir.parent / f"idem-{cid}.log"
    body = {
        "tool": "sleep_after_mark",
        "arguments": {"marker_file": str(marker), "seconds": 0},
        "idempotency_key": "step-1",
    }
    url = f"{stack.url}/api/conversations/{cid}/actions"
    first = httpx.post(url, headers=h, json=body)
    again = httpx.post(url, headers=h, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    wait_for(lambda: count_lines(marker) == 1, 20, what="the action to run")

    # The same key for another call (arguments, then tool): 409, nothing stored.
    other_arguments = body | {"arguments": {"marker_file": str(marker), "seconds": 1}}
    other_tool = body | {"tool": "terminal", "arguments": {"command": "echo no"}}
    for other in (other_arguments, other_tool):
        conflict = httpx.post(url, headers=h, json=other)
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "idempotency_conflict"
        assert first.json()["id"] in conflict.json()["error"]["message"]
    events = httpx.get(f"{url.rsplit('/', 1)[0]}/events/page", headers=h).json()["items"]
    assert [e["event"]["kind"] for e in events].count("ActionEvent") == 1
    assert httpx.post(url, headers=h, json=body).status_code == 200


def test_openapi_fuzzing_finds_no_server_errors(stack: UpProcess, tmp_path: Path) -> None:
    # The event stream is fuzzed too; its `timeout` is pinned so that a
    # stream of a conversation that exists ends (it would follow forever).
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path-regex = "events/stream"\n'
        'parameters = { "query.timeout" = 1 }\n'
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{stack.url}/openapi.json",
            "--header", f"X-Session-API-Key: {stack.key}",
            "--checks", "not_a_server_error",
            "--max-examples", "40",
            "--request-timeout", "10",
            "--workers", "1",
        ],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert httpx.get(stack.url + "/health").status_code == 200


def test_restart_after_sigkill_keeps_everything_and_reruns_nothing(tmp_path: Path) -> None:
    started: list[UpProcess] = []
    try:
        _restart_scenario(tmp_path, started)
    finally:
        for up in started:
            if up.process.poll() is None:
                os.killpg(up.process.pid, signal.SIGKILL)
                up.process.wait(10)


def _restart_scenario(tmp_path: Path, started: list[UpProcess]) -> None:
    data_dir = tmp_path / ".actionq"
    up = start_up(data_dir, tmp_path / "up.log")
    started.append(up)
    client = up.client()
    done_cid = client.create_conversation()["id"]
    client.submit_action(done_cid, {"tool": "terminal", "arguments": {"command": "echo kept"}})
    wait_for(
        lambda: client.get_conversation(done_cid)["execution_status"] == "idle", 30,
        what="the first",
    )  # fmt: skip
    running_cid = client.create_conversation()["id"]
    marker = tmp_path / "running.log"
    action = client.submit_action(
        running_cid,
        {"tool": "sleep_after_mark", "arguments": {"marker_file": str(marker), "seconds": 120}},
    )
    wait_for(lambda: count_lines(marker) == 1, 20, what="the long action to start")
    before = client.all_events(done_cid)
    # No waiting for fsync: a killed server keeps what it acknowledged
    # (docs/reliability.md), and this checks it.
    client.close()

    # Read the pids first: the server removes its pidfile as it shuts down.
    server_pid = recorded_pid(data_dir / "redis" / "server.pid")
    worker_pid = recorded_pid(data_dir / "worker.pid")
    os.killpg(up.process.pid, signal.SIGKILL)  # the whole `actionq up` process group
    up.process.wait(10)
    wait_for(lambda: not is_running(server_pid), 30, what="the server to exit")
    wait_for(lambda: not is_running(worker_pid), 30, what="the worker to exit")

    again = start_up(data_dir, tmp_path / "up2.log")
    started.append(again)
    client = again.client()
    assert client.all_events(done_cid) == before
    wait_for(
        lambda: client.get_conversation(running_cid)["execution_status"] == "error", 30,
        what="the interrupted action to be errored",
    )  # fmt: skip
    errors = [e for e in client.all_events(running_cid) if e["event"]["kind"] == "AgentErrorEvent"]
    assert [e["action_id"] for e in errors] == [action["id"]]
    # Whichever noticed first: the restarted worker's recovery or sweep, the
    # old worker's cold shutdown, or the redelivered message.
    assert errors[0]["detail"]["cause"] in ("lease_expired", "worker_shutdown", "redelivered")
    # Its message comes back (visibility timeout 5 s) and runs nothing.
    wait_for(
        lambda: httpx.get(f"{again.url}/api/actions/{action['id']}", headers=again.headers())
        .json()["attempt"] >= 2,
        30, what="the redelivery",
    )  # fmt: skip
    assert count_lines(marker) == 1
    client.close()
    assert stop_up(again) == 0


def test_cli_client_commands(stack: UpProcess) -> None:
    def actionq(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        return subprocess.run(
            [sys.executable, "-m", "actionq", "conversations", *args,
             "--url", stack.url, "--api-key", stack.key],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
        )  # fmt: skip

    created = actionq("create")
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    submitted = actionq("submit", cid, "terminal", '{"command": "echo from-cli"}', "--json")
    assert submitted.returncode == 0, submitted.stderr
    action_id = json.loads(submitted.stdout)["id"]
    client = stack.client()
    wait_for(
        lambda: client.get_conversation(cid)["execution_status"] == "idle", 30, what="the action"
    )
    client.close()

    shown = json.loads(actionq("show", cid, "--json").stdout)
    assert shown["conversation"]["id"] == cid
    observations = [e["event"] for e in shown["events"] if e["event"]["kind"] == "ObservationEvent"]
    assert text_of(observations[0]["observation"]["content"]) == "from-cli\n"
    listed = json.loads(actionq("list", "--json").stdout)
    assert cid in [c["id"] for c in listed["items"]]
    human = actionq("show", cid)
    assert "ObservationEvent" in human.stdout and "from-cli" in human.stdout

    refused = actionq("resume", cid)  # idle: nothing to resume
    assert refused.returncode == 1 and "409" in refused.stderr
    retried = actionq("retry", action_id, "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["retry_of"] == action_id
    wrong_key = subprocess.run(
        [sys.executable, "-m", "actionq", "conversations", "list", "--url", stack.url,
         "--api-key", "nope"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")},
    )  # fmt: skip
    assert wrong_key.returncode == 1 and "401" in wrong_key.stderr
