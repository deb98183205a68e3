"""The SSE stream and `actionq conversations tail` over real HTTP, against a
real `actionq up` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actionq.store.follow import KEEPALIVE_SECONDS
from tests.helpers import ROOT, wait_for
from tests.up_process import UpProcess, start_up, stop_up

# redis-py 8's default socket timeout, which used to end every stream.
REDIS_PY_DEFAULT_TIMEOUT = 5.0


class LineReader:
    """Collect lines (with their arrival time) from a blocking line source in a thread."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._source = lines
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for line in self._source:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.ended.set()

    def first(self, predicate: object) -> tuple[float, str] | None:
        assert callable(predicate)
        return next(((t, ln) for t, ln in self.lines if predicate(ln)), None)


def tail_command(up: UpProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "actionq", "conversations", "tail", *args,
            "--url", up.url, "--api-key", up.key]  # fmt: skip


def client_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}


def test_stream_and_tail_stay_open_through_silence(stack: UpProcess) -> None:
    client = stack.client()
    cid = client.create_conversation()["id"]
    silence = KEEPALIVE_SECONDS + 3
    assert silence > REDIS_PY_DEFAULT_TIMEOUT * 2

    with httpx.stream(
        "GET",
        f"{stack.url}/api/conversations/{cid}/events/stream",
        headers=stack.headers(),
        timeout=httpx.Timeout(5, read=60),
    ) as response:
        assert response.status_code == 200
        sse = LineReader(response.iter_lines())
        tail = subprocess.Popen(
            tail_command(stack, cid, "--json"), cwd=ROOT, env=client_env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert tail.stdout is not None
            tailed = LineReader(iter(tail.stdout.readline, ""))
            action = client.submit_action(
                cid, {"tool": "terminal", "arguments": {"command": f"sleep {silence}; echo woke"}}
            )
            wait_for(
                lambda: sse.first(lambda ln: '"ObservationEvent"' in ln) or sse.ended.is_set(),
                silence + 20, what="the observation on the stream",
            )  # fmt: skip
            wait_for(
                lambda: tailed.first(lambda ln: '"ObservationEvent"' in ln)
                or tailed.ended.is_set(),
                10, what="the observation in tail",
            )  # fmt: skip
        finally:
            tail.terminate()
            _, tail_stderr = tail.communicate(timeout=10)

    assert not sse.ended.is_set() or sse.first(lambda ln: "ObservationEvent" in ln), (
        f"the stream ended early: {sse.error!r} {sse.lines}"
    )
    started = sse.first(lambda ln: '"ActionEvent"' in ln)
    keepalive = sse.first(lambda ln: ln == ": keep-alive")
    observed = sse.first(lambda ln: '"ObservationEvent"' in ln)
    assert started and keepalive and observed, sse.lines
    assert started[0] < keepalive[0] < observed[0]
    assert observed[0] - started[0] >= silence - 1  # silence, not a reconnect
    assert json.loads(observed[1][len("data:") :])["event"]["action_id"] == action["id"]

    tailed_events = [json.loads(ln) for _, ln in tailed.lines]
    assert "ObservationEvent" in [e["event"]["kind"] for e in tailed_events], tail_stderr
    assert [e["seq"] for e in tailed_events] == list(range(1, len(tailed_events) + 1))
    assert "Traceback" not in stack.log.read_text()
    client.close()


def test_tail_says_so_and_exits_1_when_the_server_is_gone(tmp_path: Path) -> None:
    up = start_up(tmp_path / ".actionq", tmp_path / "up.log")
    try:
        client = up.client()
        cid = client.create_conversation()["id"]
        client.submit_action(cid, {"tool": "terminal", "arguments": {"command": "echo one"}})
        client.close()
        tail = subprocess.Popen(
            tail_command(up, cid, "--json", "--reconnect-for", "2"), cwd=ROOT,
            env=client_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        tailed = LineReader(iter(tail.stdout.readline, ""))
        wait_for(lambda: len(tailed.lines) >= 3, 20, what="tail to show the first events")
        assert stop_up(up) == 0
        _, stderr = tail.communicate(timeout=30)
    finally:
        if up.process.poll() is None:
            stop_up(up)
    assert tail.returncode == 1, stderr
    # Under --json the error is JSON on stderr (tests/local/test_cli.py).
    error = json.loads(stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "stream_lost" and "last event shown: seq" in error["message"], stderr


def test_stream_of_an_unknown_conversation_is_a_404_before_it_starts(stack: UpProcess) -> None:
    response = httpx.get(
        f"{stack.url}/api/conversations/nope/events/stream", headers=stack.headers(), timeout=10
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "conversation_not_found"
    tail = subprocess.run(
        tail_command(stack, "nope"), cwd=ROOT, env=client_env(), capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert tail.returncode == 1
    assert "404 conversation_not_found" in tail.stderr, tail.stderr


def test_stream_until_seq_and_timeout_end_it(stack: UpProcess) -> None:
    client = stack.client()
    cid = client.create_conversation()["id"]
    client.submit_action(cid, {"tool": "terminal", "arguments": {"command": "echo hi"}})
    wait_for(
        lambda: client.get_conversation(cid)["execution_status"] == "idle", 30, what="the action"
    )
    events = client.all_events(cid)
    assert [e["seq"] for e in client.stream(cid, until_seq=2)] == [1, 2]
    begun = time.monotonic()
    assert list(client.stream(cid, events[-1]["seq"], timeout=1)) == []
    assert 0.9 <= time.monotonic() - begun < 5
    client.close()


@pytest.mark.parametrize("last_event_id", [b"\xb2", "²".encode(), b"abc", b"-1", b"1.5", b"9" * 30])
def test_a_bad_last_event_id_is_a_400(stack: UpProcess, last_event_id: bytes) -> None:
    client = stack.client()
    cid = client.create_conversation()["id"]
    client.close()
    response = httpx.get(
        f"{stack.url}/api/conversations/{cid}/events/stream",
        headers=stack.headers() | {"Last-Event-ID": last_event_id},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request" and "Last-Event-ID" in error["message"]


def test_streams_are_capped_per_key_and_in_total(tmp_path: Path) -> None:
    keys = ["key-one-" + "x" * 20, "key-two-" + "y" * 20]
    up = start_up(
        tmp_path / ".actionq", tmp_path / "up.log",
        ACTIONQ_API_KEYS=",".join(keys), ACTIONQ_API_MAX_STREAMS="3",
        ACTIONQ_API_MAX_STREAMS_PER_KEY="2",
    )  # fmt: skip
    http = httpx.Client(base_url=up.url, timeout=httpx.Timeout(5, read=60))
    opened: list[httpx.Response] = []
    try:
        cid = http.post("/api/conversations", headers={"X-Session-API-Key": keys[0]}).json()["id"]

        def open_stream(key: str) -> httpx.Response:
            request = http.build_request(
                "GET", f"/api/conversations/{cid}/events/stream",
                headers={"Authorization": f"Bearer {key}"},
            )  # fmt: skip
            response = http.send(request, stream=True)
            if response.status_code == 200:
                opened.append(response)
            else:
                response.read()
            return response

        assert [open_stream(keys[0]).status_code for _ in range(2)] == [200, 200]
        per_key = open_stream(keys[0])
        assert per_key.status_code == 429, per_key.text
        assert "ACTIONQ_API_MAX_STREAMS_PER_KEY" in per_key.json()["error"]["message"]
        assert open_stream(keys[1]).status_code == 200
        total = open_stream(keys[1])
        assert total.status_code == 503, total.text
        assert total.json()["error"]["code"] == "stream_capacity_reached"

        opened.pop(0).close()  # a slot comes back when its client leaves
        wait_for(lambda: open_stream(keys[1]).status_code == 200, 10, 0.2, "a free slot")
    finally:
        for response in opened:
            response.close()
        http.close()
        stop_up(up)
