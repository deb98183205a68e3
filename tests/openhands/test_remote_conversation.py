"""OpenHands' own client, `RemoteConversation` (openhands-sdk in its Python
3.12 venv), drives a real `actionq up`: real prefork workers, the fake model
over real HTTP (tests/fake_model.py; it answers only with the key the client
sent, so a finished run proves the agent worker had that key). Every event the
client paged or got on its WebSocket validated in the SDK's models: the client
scripts fail on any validation error (tests/openhands/clients/_common.py)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from actionq.local.processes import free_port
from tests.fake_model import FakeModel
from tests.helpers import wait_for
from tests.openhands.harness import RunClient
from tests.up_process import ApiProcess, UpProcess

pytestmark = pytest.mark.openhands

# The LLM key the client sends in the create body: must never come back out.
MODEL_KEY = "sk-actionq-test-" + secrets.token_hex(16)
CLIENT_TIMEOUT = 240


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with FakeModel(api_key=MODEL_KEY) as model:
        yield model


def client_env(stack: UpProcess, fake: FakeModel, **more: str) -> dict[str, str]:
    return {
        "OH_CLIENT_API_URL": stack.url,
        "OH_CLIENT_API_KEY": stack.key,
        "OH_CLIENT_MODEL_URL": fake.base_url,
        "OH_CLIENT_MODEL_KEY": MODEL_KEY,
    } | more


def task(name: str) -> str:
    """A first message unique to the test: the fake model's script key."""
    return f"{name} {uuid.uuid4().hex[:8]}"


def envelopes(stack: UpProcess, cid: str) -> list[dict[str, Any]]:
    """actionq's own view of the events (with seq and crash detail)."""
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = httpx.get(
            f"{stack.url}/api/conversations/{cid}/events/page",
            params={"after_seq": after, "limit": 1000},
            headers=stack.headers(),
            timeout=10,
        ).json()
        items += page["items"]
        if page["next_after_seq"] is None:
            return items
        after = page["next_after_seq"]


def gated(command: str, gate: Path) -> str:
    """`command` once `gate` exists (the test opens it); bounded at 120 s."""
    return f"for i in $(seq 1200); do [ -e {gate} ] && break; sleep 0.1; done; {command}"


def test_a_task_runs_to_finished(
    run_client: RunClient, stack: UpProcess, fake: FakeModel, tmp_path: Path
) -> None:
    message = task("list the files")
    fake.script(
        message,
        [
            {"tool_calls": [{"name": "terminal", "arguments": {"command": "echo tool-ran"}}]},
            {"content": "There is one file."},
        ],
    )
    result = run_client(
        "story", client_env(stack, fake, OH_CLIENT_MESSAGE=message), CLIENT_TIMEOUT
    ).result
    assert result["status"] == "finished"
    kinds = [e["kind"] for e in result["list"]]
    assert [k for k in kinds if k != "ConversationStateUpdateEvent"] == [
        "MessageEvent", "ActionEvent", "ObservationEvent", "MessageEvent",
    ]  # fmt: skip
    observation = next(e for e in result["list"] if e["kind"] == "ObservationEvent")
    assert observation["observation"]["kind"] == "TerminalObservation"
    assert observation["observation"]["content"][0]["text"] == "tool-ran\n"
    assert observation["observation"]["exit_code"] == 0
    # The socket delivered the run live (its first event the full_state
    # snapshot), and everything it delivered is in the list, once.
    assert result["socket_kinds"][0] == "ConversationStateUpdateEvent"
    assert "ObservationEvent" in result["socket_kinds"]
    assert len(result["list_ids"]) == len(set(result["list_ids"]))
    # The client keeps the socket's full_state snapshots in its list too (as
    # with OpenHands' server); they are not stored events.
    stored = [e for e in result["list"] if e.get("key") != "full_state"]
    assert result["events_validated"] == len(stored)
    # The model saw the command's result as that call's answer.
    second = fake.requests(message)[1]["messages"]
    assert second[-1]["role"] == "tool" and "tool-ran" in second[-1]["content"]


def test_a_call_that_kills_its_worker_is_an_error_the_agent_reads(
    run_client: RunClient, stack: UpProcess, fake: FakeModel, tmp_path: Path
) -> None:
    message = task("clean the cache")
    marker = tmp_path / "ran"
    command = f"echo once >> {marker}; kill -9 $PPID"
    fake.script(
        message,
        [
            {"tool_calls": [{"name": "terminal", "arguments": {"command": command}}]},
            {"content": "That command crashed the worker; I will not run it again."},
        ],
    )
    env = client_env(stack, fake, OH_CLIENT_MESSAGE=message, OH_CLIENT_FOLLOW_UP="Try another way")
    result = run_client("crash", env, CLIENT_TIMEOUT).result
    assert result["status_after_crash"] == "error"
    assert result["run_error"] is not None
    [error] = result["errors"]
    assert error["tool_call_id"] == result["call_ids"][0]
    assert "worker_lost" in error["error"] and "signal 9" in error["error"]
    assert error["classification"]["error_id"] == "actionq.worker_lost"
    assert result["final_status"] == "finished"
    assert marker.read_text() == "once\n"  # it ran once, and never again
    # The model got the crash as that call's result, then the user's message.
    after = fake.requests(message)[1]["messages"]
    tool_result = next(m for m in after if m["role"] == "tool")
    assert tool_result["tool_call_id"] == error["tool_call_id"]
    assert tool_result["content"]
    assert after[-1] == {"role": "user", "content": "Try another way"}
    [crash] = [e for e in envelopes(stack, result["id"]) if e["event"]["kind"] == "AgentErrorEvent"]
    assert crash["detail"]["cause"] == "worker_lost" and crash["detail"]["signal"] == 9


def test_confirmation_reject_then_approve(
    run_client: RunClient, stack: UpProcess, fake: FakeModel, tmp_path: Path
) -> None:
    message = task("tidy up")
    rejected, accepted = tmp_path / "rejected", tmp_path / "accepted"
    fake.script(
        message,
        [
            {"tool_calls": [{"name": "terminal", "arguments": {"command": f"touch {rejected}"}}]},
            {
                "tool_calls": [
                    {"name": "terminal", "arguments": {"command": f"echo x >> {accepted}"}}
                ]
            },
            {"content": "Done the other way."},
        ],
    )
    env = client_env(stack, fake, OH_CLIENT_MESSAGE=message, OH_CLIENT_FOLLOW_UP="do it safely")
    result = run_client("confirm", env, CLIENT_TIMEOUT).result
    assert result["policy"] == "AlwaysConfirm"
    assert result["first_wait"] == "waiting_for_confirmation"
    [reject] = result["rejected"]
    assert reject["rejection_reason"] == "not that one"
    assert result["after_reject"] == "idle"
    assert result["second_wait"] == "waiting_for_confirmation"
    assert result["final_status"] == "finished"
    assert not rejected.exists()
    assert accepted.read_text() == "x\n"


def test_the_llm_key_never_comes_back_out(
    run_client: RunClient, stack: UpProcess, fake: FakeModel
) -> None:
    message = task("show the environment")
    # The tool prints its own environment and its worker process's.
    command = "env; tr '\\0' '\\n' < /proc/$PPID/environ"
    fake.script(
        message,
        [
            {"tool_calls": [{"name": "terminal", "arguments": {"command": command}}]},
            {"content": "Printed."},
        ],
    )
    result = run_client(
        "story", client_env(stack, fake, OH_CLIENT_MESSAGE=message), CLIENT_TIMEOUT
    ).result
    assert result["status"] == "finished"  # the fake model checked the key on every call
    output = next(e for e in result["list"] if e["kind"] == "ObservationEvent")
    assert "PATH=" in output["observation"]["content"][0]["text"]  # it did print
    cid = result["id"]
    info = httpx.get(f"{stack.url}/api/conversations/{cid}", headers=stack.headers()).json()
    assert info["agent"]["llm"]["api_key"] == "**********"
    searched = {
        "the client's events": json.dumps(result["list"]),
        "the events": json.dumps(envelopes(stack, cid)),
        "the conversation's info": json.dumps(info),
    }
    # Every file of the data folder: logs, and the server's own data (where
    # the key is only sealed).
    for path in stack.data_dir.rglob("*"):
        if path.is_file():
            searched[str(path)] = path.read_bytes().decode(errors="replace")
    assert any(name.endswith(".log") for name in searched)
    leaked = [name for name, text in searched.items() if MODEL_KEY in text]
    assert leaked == []


def test_the_api_process_killed_and_restarted_mid_run(
    run_client: RunClient, stack: UpProcess, fake: FakeModel, tmp_path: Path
) -> None:
    """The client talks to a second API process, which the test SIGKILLs
    while a tool runs; the run goes on on the workers (two more calls are
    made) while no API serves the client; then the API starts again on the
    same port. The client's socket reconnects, reconciles over REST, and the
    run ends `finished` with every stored event in the client's list once."""
    api = ApiProcess(stack, free_port(), tmp_path / "api.log")
    api.start()
    ran, started = tmp_path / "ran", tmp_path / "started"
    gate, last_gate = tmp_path / "gate", tmp_path / "last-gate"
    id_file, reconnected = tmp_path / "id", tmp_path / "reconnected"
    message = task("three steps")
    fake.script(
        message,
        [
            {"tool_calls": [{"name": "terminal", "arguments": {
                "command": f"touch {started}; " + gated(f"echo one >> {ran}", gate)}}]},
            {"tool_calls": [{"name": "terminal", "arguments": {"command": f"echo two >> {ran}"}}]},
            {"tool_calls": [{"name": "terminal", "arguments": {
                "command": gated(f"echo three >> {ran}", last_gate)}}]},
            {"content": "All three ran."},
        ],
    )  # fmt: skip
    env = client_env(
        stack, fake, OH_CLIENT_MESSAGE=message, OH_CLIENT_API_URL=api.url,
        OH_CLIENT_ID_FILE=str(id_file), OH_CLIENT_RECONNECTED_FILE=str(reconnected),
    )  # fmt: skip

    def stored_kinds() -> list[str]:
        return [e["event"]["kind"] for e in envelopes(stack, id_file.read_text())]

    with ThreadPoolExecutor(1) as pool:
        client = pool.submit(run_client, "reconnect", env, CLIENT_TIMEOUT)
        try:
            wait_for(lambda: started.exists() or client.done(), 120, 0.1, "the first call to run")
            assert not client.done(), client.result()
            api.kill()
            assert not reconnected.exists()  # the client's socket is still its first
            gate.touch()
            # The run goes on without the API the client uses: the first call
            # ends, the second runs, the third is made (up's own API reads it).
            wait_for(
                lambda: stored_kinds().count("ActionEvent") == 3,
                90,
                0.2,
                "the run to go on while the client's API is down",
            )
            api.start()
            wait_for(
                lambda: reconnected.exists() or client.done(),
                90,
                0.1,
                "the client's socket to reconnect",
            )
            last_gate.touch()
            result = client.result(timeout=CLIENT_TIMEOUT).result
        finally:
            gate.touch()
            last_gate.touch()
            api.kill()
    assert result["status"] == "finished"
    assert ran.read_text() == "one\ntwo\nthree\n"  # each call ran once
    assert result["expected_errors_logged"] > 0  # the client did find its server gone
    assert result["snapshots"] >= 2  # a snapshot on connecting, one on reconnecting
    stored = [e["event"] for e in envelopes(stack, result["id"])]
    assert [e["kind"] for e in stored if e["kind"] != "ConversationStateUpdateEvent"] == [
        "MessageEvent", *["ActionEvent", "ObservationEvent"] * 3, "MessageEvent",
    ]  # fmt: skip
    stored_ids = [e["id"] for e in stored]
    # Nothing missing, nothing doubled, in the server's order: the events made
    # while the client's API was down came in by the reconcile.
    assert result["list_ids"] == stored_ids
    # Each event reached the client's callbacks once, the missed ones replayed.
    assert sorted(result["callback_ids"]) == sorted(set(result["callback_ids"]))
    outage = stored_ids[
        stored_ids.index(next(e["id"] for e in stored if e["kind"] == "ObservationEvent")) :
    ]
    assert set(outage) <= set(result["callback_ids"])
