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
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_model import FakeModel
from tests.openhands.harness import RunClient
from tests.up_process import UpProcess, start_up, stop_up

pytestmark = pytest.mark.openhands

# The LLM key the client sends in the create body: must never come back out.
MODEL_KEY = "sk-actionq-test-" + secrets.token_hex(16)
CLIENT_TIMEOUT = 240


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with FakeModel(api_key=MODEL_KEY) as model:
        yield model


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    base = tmp_path_factory.mktemp("oh-up")
    up = start_up(base / ".actionq", base / "up.log")
    yield up
    stop_up(up)


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
