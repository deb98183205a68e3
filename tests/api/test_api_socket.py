"""OpenHands' event WebSocket (``/sockets/events/{id}``) over real TCP, with
the ``websockets`` client, against a real `actionq up` (its uvicorn, its
workers) started as a subprocess. What it sends is checked against the
lead's projection (``sdk_event``) of the same stored events, read over REST."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from actionq.api.openhands.info import ConversationInfo
from tests.helpers import wait_for
from tests.up_process import UpProcess, kill_up, start_up

Frame = dict[str, Any]


def socket_url(up: UpProcess, cid: str, query: str = "") -> str:
    return up.url.replace("http://", "ws://", 1) + f"/sockets/events/{cid}{query}"


@contextmanager
def open_socket(
    up: UpProcess,
    cid: str,
    query: str = "",
    key: str | None = None,
    headers: dict[str, str] | None = None,
    first: str | bytes | None = None,
) -> Iterator[ClientConnection]:
    """A socket; with ``key``, authenticated as RemoteConversation does (first
    frame), or with ``first`` as its first frame."""
    with connect(socket_url(up, cid, query), additional_headers=headers, open_timeout=10) as ws:
        if key is not None:
            ws.send(json.dumps({"type": "auth", "session_api_key": key}))
        elif first is not None:
            ws.send(first)
        yield ws


@contextmanager
def socket_let_in(up: UpProcess, cid: str, timeout: float, why: str) -> Iterator[ClientConnection]:
    """An authenticated socket past its snapshot, opened again while the
    server closes it at once, as a client that reconnects does: it frees a
    closed socket's stream slot a moment after the client sees the close."""
    deadline = time.monotonic() + timeout
    while True:
        with open_socket(up, cid, key=up.key) as ws:
            try:
                frame = recv(ws)
            except ConnectionClosed:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no socket let in after {timeout} s: {why}") from None
            else:
                check_snapshot(frame, cid)
                yield ws
                return
        time.sleep(0.2)


def recv(ws: ClientConnection, timeout: float = 20) -> Frame:
    frame: Frame = json.loads(ws.recv(timeout=timeout))
    return frame


def close_code(ws: ClientConnection, timeout: float = 20) -> int | None:
    """Read until the server closes; its close code."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd is not None else None
    raise AssertionError(f"the socket stayed open for {timeout} s")


def recv_until(
    ws: ClientConnection, done: Callable[[Frame], bool], timeout: float = 30
) -> list[Frame]:
    """Frames up to and including the first for which ``done`` is true."""
    deadline = time.monotonic() + timeout
    frames: list[Frame] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; got {[f['kind'] for f in frames]}")
        frames.append(recv(ws, remaining))
        if done(frames[-1]):
            return frames


def is_full_state(frame: Frame) -> bool:
    return bool(frame["kind"] == "ConversationStateUpdateEvent" and frame["key"] == "full_state")


def run_over(frame: Frame) -> bool:
    """The snapshot RemoteConversation.run() returns on."""
    return is_full_state(frame) and frame["value"]["execution_status"] != "running"


def rest_events(up: UpProcess, cid: str) -> list[dict[str, Any]]:
    """The REST history (actionq's envelopes), each event in the SDK's JSON."""
    client = up.client()
    try:
        return [envelope["event"] for envelope in client.all_events(cid)]
    finally:
        client.close()


def as_sdk(stored: list[dict[str, Any]]) -> list[Frame]:
    """The REST history, which is in the SDK's JSON already: the socket must
    send exactly what REST has."""
    return stored


def wait_idle(up: UpProcess, cid: str) -> None:
    client = up.client()

    def idle() -> bool:
        conversation = client.get_conversation(cid)
        return (
            conversation["execution_status"] == "idle" and conversation["active_action_id"] is None
        )

    try:
        wait_for(idle, 30, 0.1, f"{cid} to be idle")
    finally:
        client.close()


def check_snapshot(frame: Frame, cid: str) -> ConversationInfo:
    """A full_state as the SDK dumps one: its fields, kind last, value a ConversationInfo."""
    assert is_full_state(frame), frame
    assert list(frame) == ["id", "timestamp", "source", "key", "value", "kind"]
    assert frame["source"] == "environment"
    uuid.UUID(frame["id"])
    assert datetime.fromisoformat(frame["timestamp"]).utcoffset() is not None
    info = ConversationInfo.model_validate(frame["value"])
    assert info.id == cid
    return info


def submit(up: UpProcess, cid: str, command: str) -> dict[str, Any]:
    client = up.client()
    try:
        return client.submit_action(cid, {"tool": "terminal", "arguments": {"command": command}})
    finally:
        client.close()


def new_conversation(up: UpProcess, body: dict[str, Any] | None = None) -> str:
    client = up.client()
    try:
        cid: str = client.create_conversation(body)["id"]
        return cid
    finally:
        client.close()


def test_first_frame_auth_then_the_full_state(stack: UpProcess) -> None:
    cid = new_conversation(stack)
    with open_socket(stack, cid, key=stack.key) as ws:
        info = check_snapshot(recv(ws), cid)
    assert (info.execution_status, info.last_seq, info.agent) == ("idle", 0, None)
    assert info.workspace.working_dir.endswith(cid)


def test_a_key_in_the_header_or_the_query_needs_no_frame(stack: UpProcess) -> None:
    cid = new_conversation(stack)
    with open_socket(stack, cid, headers={"X-Session-API-Key": stack.key}) as ws:
        check_snapshot(recv(ws, timeout=5), cid)
        # An auth frame after that is one more frame to ignore, not a second auth.
        ws.send(json.dumps({"type": "auth", "session_api_key": "whatever"}))
        submit(stack, cid, "true")
        assert recv(ws)["kind"] == "ActionEvent"
    with open_socket(stack, cid, f"?session_api_key={stack.key}") as ws:
        check_snapshot(recv(ws, timeout=5), cid)


def test_a_bad_or_missing_key_closes_with_4001(stack: UpProcess) -> None:
    cid = new_conversation(stack)
    bad_key = "not-the-key-" + uuid.uuid4().hex
    message = json.dumps({"role": "user", "content": [{"type": "text", "text": "hi"}]})
    refused: list[dict[str, Any]] = [
        {"key": bad_key},
        {"headers": {"X-Session-API-Key": bad_key}},
        {"query": f"?session_api_key={bad_key}"},
        {"cid": "no-such-conversation", "key": bad_key},  # the key is checked first
        {"first": message},  # no key and the first frame is not the auth frame
        {"first": "{not json"},
        {"first": '{"type": "auth", "session_api_key": "\\ud800"}'},  # not even text
        {"first": json.dumps({"type": "auth", "session_api_key": 12})},
    ]
    for how in refused:
        with open_socket(stack, how.pop("cid", cid), **how) as ws:
            assert close_code(ws) == 4001, how
    started = time.monotonic()
    with open_socket(stack, cid) as silent:
        assert close_code(silent, timeout=20) == 4001
    assert 9 <= time.monotonic() - started < 15  # the auth frame's 10 s
    assert bad_key not in stack.output()
    assert "Traceback" not in stack.output()


def test_an_unknown_conversation_closes_with_4004(stack: UpProcess) -> None:
    with open_socket(stack, "no-such-conversation", key=stack.key) as ws:
        assert close_code(ws) == 4004


def test_resend_mode_replays_the_rest_history(stack: UpProcess) -> None:
    cid = new_conversation(stack)
    for command in ("echo one", "echo two"):
        submit(stack, cid, command)
        wait_idle(stack, cid)
    for query in ("?resend_mode=all", "?resend_all=true"):
        stored = rest_events(stack, cid)
        assert len(stored) >= 8
        history = as_sdk(stored)
        with open_socket(stack, cid, query, key=stack.key) as ws:
            info = check_snapshot(recv(ws), cid)
            assert info.last_seq == len(stored)
            assert [recv(ws) for _ in history] == history
            # And nothing else, until something happens.
            submit(stack, cid, "true")
            assert recv(ws)["kind"] == "ActionEvent"
            wait_idle(stack, cid)

    stored = rest_events(stack, cid)
    history = as_sdk(stored)
    # From the first observation on (written by the worker, after the
    # ActionEvent and the status that the API appended together), at or after
    # the time given: events appended at once share their timestamp.
    since = datetime.fromisoformat(stored[2]["timestamp"])
    wanted = [
        h
        for s, h in zip(stored, history, strict=True)
        if datetime.fromisoformat(s["timestamp"]) >= since
    ]
    assert stored[2]["kind"] == "ObservationEvent" and wanted == history[2:]
    given = since.isoformat()
    naive = since.replace(tzinfo=None).isoformat()
    for after in (quote(given), given.replace("+00:00", "Z"), naive):
        with open_socket(
            stack, cid, f"?resend_mode=since&after_timestamp={after}", key=stack.key
        ) as ws:
            check_snapshot(recv(ws), cid)
            assert [recv(ws) for _ in wanted] == wanted

    # Without resend_mode: no history, only what happens next.
    with open_socket(stack, cid, key=stack.key) as ws:
        check_snapshot(recv(ws), cid)
        action = submit(stack, cid, "true")
        first = recv(ws)
        assert (first["kind"], first["id"]) == ("ActionEvent", action["id"])

    for query in (
        "?resend_mode=some",
        "?resend_mode=since",
        "?resend_mode=since&after_timestamp=x",
    ):
        with open_socket(stack, cid, query, key=stack.key) as ws:
            assert close_code(ws) == 1008


def test_live_events_then_a_snapshot_when_the_run_ends(stack: UpProcess) -> None:
    cid = new_conversation(stack)
    with open_socket(stack, cid, key=stack.key) as ws:
        assert check_snapshot(recv(ws), cid).execution_status == "idle"
        action = submit(stack, cid, "echo live")
        frames = recv_until(ws, run_over)
    *live, snapshot = frames
    stored = rest_events(stack, cid)
    # Every event, once, in order, exactly as the projection has it; then the snapshot.
    assert live == as_sdk(stored)
    statuses = [f["value"] for f in live if f.get("key") == "execution_status"]
    assert statuses == ["running", "idle"]
    assert live[-1]["value"] == "idle"  # the snapshot follows the event that ended the run
    info = check_snapshot(snapshot, cid)
    assert (info.execution_status, info.last_seq, info.active_action_id) == (
        "idle",
        len(stored),
        None,
    )
    observation = next(f for f in live if f["kind"] == "ObservationEvent")
    assert observation["action_id"] == action["id"]
    # Not stored: the history has no full_state.
    assert not any(e.get("key") == "full_state" for e in stored)


# What the SDK's Message(role="user", content=[TextContent(text=...)]).model_dump(mode="json")
# is (openhands-sdk 1.58).
def sdk_message(text: str, role: str = "user") -> dict[str, Any]:
    return {
        "role": role,
        "content": [{"cache_prompt": False, "type": "text", "text": text}],
        "tool_calls": None,
        "tool_call_id": None,
        "name": None,
        "reasoning_content": None,
        "thinking_blocks": [],
        "responses_reasoning_item": None,
    }


def test_a_message_frame_is_sent_and_runs_the_agent(stack: UpProcess) -> None:
    agent = {"kind": "scripted", "turns": [{"text": "hello back"}]}
    cid = new_conversation(stack, {"agent": agent})
    with open_socket(stack, cid, key=stack.key) as ws:
        check_snapshot(recv(ws), cid)
        # Not messages: ignored, and the socket stays.
        ws.send("{not json")
        ws.send("[[[[1]]]]")
        ws.send(json.dumps({"type": "something"}))
        ws.send(json.dumps(sdk_message("I am the model", role="assistant")))
        ws.send(json.dumps({"role": "user", "content": [{"type": "image", "image_urls": []}]}))
        ws.send(b'{"role": "user", "content": []}')
        ws.send(json.dumps(sdk_message("hi there")))
        frames = recv_until(ws, run_over)
    stored = rest_events(stack, cid)
    said = [
        (e["source"], e["llm_message"]["content"][0]["text"])
        for e in stored
        if e["kind"] == "MessageEvent"
    ]
    assert said == [("user", "hi there"), ("agent", "hello back")]
    *live, snapshot = frames
    assert live == as_sdk(stored)
    assert live[0]["kind"] == "MessageEvent"
    assert live[0]["llm_message"] == {
        "role": "user",
        "content": [{"type": "text", "text": "hi there"}],
    }
    assert check_snapshot(snapshot, cid).execution_status == "finished"
    assert "Traceback" not in stack.output()


def test_a_deeply_nested_frame_is_ignored(stack: UpProcess) -> None:
    cid = new_conversation(stack)
    with open_socket(stack, cid, key=stack.key) as ws:
        check_snapshot(recv(ws), cid)
        ws.send("[" * 20_000 + "]" * 20_000)  # json.loads: RecursionError
        action = submit(stack, cid, "true")
        assert recv(ws)["id"] == action["id"]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[UpProcess]:
    """A stack that serves one event stream per key, with small frames."""
    up = start_up(
        tmp_path / ".actionq", tmp_path / "up.log",
        ACTIONQ_API_MAX_STREAMS_PER_KEY="1", ACTIONQ_API_MAX_BODY_BYTES="4096",
    )  # fmt: skip
    yield up
    if up.process.poll() is None:
        kill_up(up)


def test_sockets_share_the_streams_limit_and_frames_the_body_limit(limited: UpProcess) -> None:
    cid = new_conversation(limited)
    with open_socket(limited, cid, key=limited.key) as first:
        check_snapshot(recv(first), cid)
        with open_socket(limited, cid, key=limited.key) as second:
            assert close_code(second) == 1013
        sse = httpx.get(
            f"{limited.url}/api/conversations/{cid}/events/stream",
            headers=limited.headers(), timeout=10,
        )  # fmt: skip
        assert sse.status_code == 429

    # The slot is given back when the socket ends.
    with socket_let_in(limited, cid, 10, "the first socket's slot is never given back") as ws:
        ws.send(json.dumps(sdk_message("x" * 5000)))
        assert close_code(ws) == 1009
    assert rest_events(limited, cid) == []


def test_a_store_outage_closes_with_1011(limited: UpProcess) -> None:
    cid = new_conversation(limited)
    url = (limited.data_dir / "redis.url").read_text().strip()
    admin = redis.Redis.from_url(url, decode_responses=True)
    password = str(admin.config_get("requirepass")["requirepass"])
    try:
        with open_socket(limited, cid, key=limited.key) as ws:
            check_snapshot(recv(ws), cid)
            # The follower's connection is cut and it cannot connect again.
            admin.config_set("requirepass", "changed-" + uuid.uuid4().hex)
            admin.client_kill_filter(_type="normal", skipme=True)
            assert close_code(ws, timeout=40) == 1011
    finally:
        admin.config_set("requirepass", password)
        admin.close()

    # Back: the client reconnects.
    with socket_let_in(limited, cid, 30, "the store is back but no socket is served"):
        pass
