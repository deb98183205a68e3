"""The story actionq exists for, with an LLM agent: litellm's real HTTP path
against a local fake OpenAI-compatible model (tests/fake_model.py), a real
prefork tool worker and a real thread-pool agent worker. No network."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actionq.agent.spec import AgentSpec
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationErrorEvent,
    ConversationStatus,
    ObservationEvent,
)
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, events_of
from tests.fake_model import FakeModel
from tests.helpers import wait_for

MODEL_KEY = "sk-fake-model-key-4f1c9e"
LLM = AgentSpec(kind="llm", model_profile="default")


@pytest.fixture
def fake() -> Iterator[FakeModel]:
    with FakeModel(api_key=MODEL_KEY) as model:
        yield model


@pytest.fixture
def settings_env(settings_env: dict[str, str], fake: FakeModel) -> dict[str, str]:
    return settings_env | {
        "ACTIONQ_MODEL": "openai/fake-model",
        "ACTIONQ_MODEL_BASE_URL": fake.base_url,
        "ACTIONQ_MODEL_API_KEY_ENV": "FAKE_MODEL_KEY",
        "ACTIONQ_MODEL_RETRIES": "2",
        "ACTIONQ_MODEL_RETRY_BASE_SECONDS": "0.05",
    }


def _workers(start_worker: WorkerFactory) -> None:
    # The key is in both workers' environment, as on a host that holds it:
    # tool commands must still never see it.
    start_worker("tools", FAKE_MODEL_KEY=MODEL_KEY)
    start_worker("agent", agent=True, concurrency=4, FAKE_MODEL_KEY=MODEL_KEY)


def _wait_status(aq: ActionQ, cid: str, status: ConversationStatus, timeout: float = 40) -> None:
    wait_for(
        lambda: aq.get_conversation(cid).status == status, timeout, what=f"status {status.value}"
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def assert_valid_chat(messages: list[dict[str, Any]]) -> None:
    """Each assistant tool call answered at once, exactly once, by its id."""
    i = 0
    ids: list[str] = []
    while i < len(messages):
        assert messages[i]["role"] != "tool", f"a tool message without its call: {messages[i]}"
        calls = [c["id"] for c in messages[i].get("tool_calls") or []]
        ids += calls
        answers = messages[i + 1 : i + 1 + len(calls)]
        assert [(m["role"], m["tool_call_id"]) for m in answers] == [("tool", c) for c in calls]
        i += 1 + len(calls)
    assert len(ids) == len(set(ids)), "a tool_call_id used twice"


def test_the_model_reads_the_crash_as_the_calls_result_and_does_something_else(
    aq: ActionQ, start_worker: WorkerFactory, fake: FakeModel, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    fake.script(
        "clean the logs",
        [
            {"tool_calls": [_tool_call("terminal", command="env")]},
            {"tool_calls": [_tool_call("kill_own_process", marker_file=str(marks), line="poison")]},
            {
                "content": "That crashed; another way.",
                "tool_calls": [
                    _tool_call("sleep_after_mark", marker_file=str(marks), line="other", seconds=0)
                ],
            },
            {"content": "Done, without the command that crashed."},
        ],
    )
    _workers(start_worker)
    cid = aq.create_conversation(agent=LLM).id
    aq.send_message(cid, "clean the logs please", run=True)
    _wait_status(aq, cid, ConversationStatus.ERROR)
    events = events_of(aq, cid)
    [crash] = [e for e in events if isinstance(e, AgentErrorEvent)]
    assert crash.detail.cause == "worker_lost" and crash.tool_name == "kill_own_process"
    assert len(fake.requests("clean the logs")) == 2

    aq.send_message(cid, "try another way", run=True)
    _wait_status(aq, cid, ConversationStatus.FINISHED)
    requests = fake.requests("clean the logs")
    assert len(requests) == 4
    after_crash = requests[2]["messages"]
    assert_valid_chat(after_crash)
    crash_result = [m for m in after_crash if m.get("tool_call_id") == crash.tool_call_id]
    assert len(crash_result) == 1 and "died" in crash_result[0]["content"]
    assert after_crash[-1] == {"role": "user", "content": "try another way"}
    for request in requests:
        assert_valid_chat(request["messages"])
    assert _lines(marks) == ["poison", "other"]  # the poison ran once

    events = events_of(aq, cid)
    calls = [e for e in events if isinstance(e, ActionEvent)]
    assert [c.tool_name for c in calls] == [
        "terminal",
        "kill_own_process",
        "sleep_after_mark",
    ]
    assert calls[2].thought == "That crashed; another way."
    # The model key never reached a tool, an event or the model's messages.
    env_output = next(e for e in events if isinstance(e, ObservationEvent)).observation
    assert MODEL_KEY not in json.dumps(env_output)
    assert MODEL_KEY not in json.dumps([e.model_dump(mode="json") for e in events])
    assert MODEL_KEY not in json.dumps(requests)
    assert_log_consistent(aq, cid)


def test_a_step_whose_worker_dies_mid_call_runs_again_and_records_once(
    aq: ActionQ, start_worker: WorkerFactory, fake: FakeModel, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    fake.script(
        "slow model",
        [
            {
                "delay": 3,
                "tool_calls": [
                    _tool_call("sleep_after_mark", marker_file=str(marks), line="once", seconds=0)
                ],
            },
            {"content": "finished"},
        ],
    )
    start_worker("tools", FAKE_MODEL_KEY=MODEL_KEY)
    doomed = start_worker("agent-a", agent=True, FAKE_MODEL_KEY=MODEL_KEY)
    cid = aq.create_conversation(agent=LLM).id
    aq.send_message(cid, "slow model, one call", run=True)
    wait_for(lambda: len(fake.requests("slow model")) == 1, 20, what="the model call")
    os.kill(doomed.pid, signal.SIGKILL)  # the whole agent worker, mid-call
    start_worker("agent-b", agent=True, FAKE_MODEL_KEY=MODEL_KEY)
    _wait_status(aq, cid, ConversationStatus.FINISHED, timeout=60)

    requests = fake.requests("slow model")
    assert len(requests) == 3  # asked twice for step 1, once for step 2
    assert requests[0]["messages"] == requests[1]["messages"]
    events = events_of(aq, cid)
    assert len([e for e in events if isinstance(e, ActionEvent)]) == 1
    assert _lines(marks) == ["once"]
    assert_log_consistent(aq, cid)


def test_model_errors_are_retried_then_end_the_run(
    aq: ActionQ, start_worker: WorkerFactory, fake: FakeModel
) -> None:
    fake.script("flaky", [{"fail": [429, 500], "content": "answered after two errors"}])
    fake.script("down", [{"fail": [500] * 10, "content": "never"}])
    _workers(start_worker)
    flaky = aq.create_conversation(agent=LLM).id
    aq.send_message(flaky, "flaky model", run=True)
    down = aq.create_conversation(agent=LLM).id
    aq.send_message(down, "down model", run=True)
    _wait_status(aq, flaky, ConversationStatus.FINISHED)
    assert len(fake.requests("flaky")) == 3
    _wait_status(aq, down, ConversationStatus.ERROR)
    assert len(fake.requests("down")) == 3  # the call and its 2 retries
    [error] = [e for e in events_of(aq, down) if isinstance(e, ConversationErrorEvent)]
    assert error.classification is not None
    assert error.classification.kind == "transient" and error.classification.retryable
    assert MODEL_KEY not in error.detail

    # 429 for ever: rate_limit, and `run` asks again (the error is resumable).
    fake.script("limited", [{"fail": [429] * 3, "content": "finally"}])
    limited = aq.create_conversation(agent=LLM).id
    aq.send_message(limited, "limited model", run=True)
    _wait_status(aq, limited, ConversationStatus.ERROR)
    [error] = [e for e in events_of(aq, limited) if isinstance(e, ConversationErrorEvent)]
    assert error.classification is not None and error.classification.kind == "rate_limit"
    aq.run(limited)
    _wait_status(aq, limited, ConversationStatus.FINISHED)


def test_parallel_calls_only_the_call_in_flight_is_errored(
    aq: ActionQ, start_worker: WorkerFactory, fake: FakeModel, tmp_path: Path
) -> None:
    """Three calls in one response, each its own job, run in order: the
    first keeps its observation (written when it finished), the second's
    worker dies, the third never started (not_run). The next request to the
    model answers each of the three calls exactly once."""
    marks = tmp_path / "marks"
    fake.script(
        "three at once",
        [
            {
                "tool_calls": [
                    _tool_call("sleep_after_mark", marker_file=str(marks), line="a", seconds=0),
                    _tool_call("kill_own_process", marker_file=str(marks), line="b"),
                    _tool_call("sleep_after_mark", marker_file=str(marks), line="c", seconds=0),
                ]
            },
            {"content": "understood"},
        ],
    )
    _workers(start_worker)
    cid = aq.create_conversation(agent=LLM).id
    aq.send_message(cid, "three at once", run=True)
    _wait_status(aq, cid, ConversationStatus.ERROR)
    aq.run(cid)
    _wait_status(aq, cid, ConversationStatus.FINISHED)
    events = events_of(aq, cid)
    calls = [e for e in events if isinstance(e, ActionEvent)]
    assert len(calls) == 3 and len({c.llm_response_id for c in calls}) == 1
    kinds = {
        e.tool_call_id: (e.kind, getattr(getattr(e, "detail", None), "cause", None))
        for e in events
        if isinstance(e, ObservationEvent | AgentErrorEvent)
    }
    assert [kinds[c.tool_call_id] for c in calls] == [
        ("ObservationEvent", None),
        ("AgentErrorEvent", "worker_lost"),
        ("AgentErrorEvent", "not_run"),
    ]
    assert _lines(marks) == ["a", "b"]
    second = fake.requests("three at once")[1]["messages"]
    assert_valid_chat(second)
    answered = [m["tool_call_id"] for m in second if m["role"] == "tool"]
    assert answered == [c.tool_call_id for c in calls]
    assert_log_consistent(aq, cid)


def test_pause_interrupt_and_confirmation_around_a_model_call_in_flight(
    aq: ActionQ, start_worker: WorkerFactory, fake: FakeModel, tmp_path: Path
) -> None:
    """pause while the model thinks: its reply is recorded, its call waits
    for run; interrupt: the reply is dropped and the model is asked again
    on run; calls recorded while paused under AlwaysConfirm wait for the
    user when the run goes on."""
    marks = tmp_path / "marks"

    def slow_call(line: str) -> list[dict[str, Any]]:
        call = _tool_call("sleep_after_mark", marker_file=str(marks), line=line, seconds=0)
        return [{"delay": 2, "tool_calls": [call]}, {"content": "ok"}]

    fake.script("pause me", slow_call("paused"))
    fake.script("interrupt me", slow_call("interrupted"))
    fake.script("confirm me", slow_call("confirmed"))
    _workers(start_worker)

    def started(key: str, text: str, spec: AgentSpec = LLM) -> str:
        cid = aq.create_conversation(agent=spec).id
        aq.send_message(cid, text, run=True)
        count = len(fake.requests(key))
        wait_for(lambda: len(fake.requests(key)) > count, 20, what="the model call")
        return cid

    def calls(cid: str) -> list[ActionEvent]:
        return [e for e in events_of(aq, cid) if isinstance(e, ActionEvent)]

    paused = started("pause me", "pause me please")
    aq.pause(paused)
    wait_for(lambda: len(calls(paused)) == 1, 20, what="the reply recorded while paused")
    assert aq.get_conversation(paused).status == ConversationStatus.PAUSED
    assert aq.get_conversation(paused).queued_actions == 1 and not marks.exists()
    aq.run(paused)
    _wait_status(aq, paused, ConversationStatus.FINISHED)
    assert _lines(marks) == ["paused"]

    interrupted = started("interrupt me", "interrupt me please")
    aq.interrupt(interrupted)
    assert aq.get_conversation(interrupted).status == ConversationStatus.PAUSED
    wait_for(lambda: len(fake.requests("interrupt me")) >= 1, 5)
    aq.run(interrupted)
    _wait_status(aq, interrupted, ConversationStatus.FINISHED)
    assert len(calls(interrupted)) == 1  # the first reply was never recorded
    first_position = [r for r in fake.requests("interrupt me") if len(r["messages"]) == 2]
    assert len(first_position) == 2  # asked again
    assert _lines(marks) == ["paused", "interrupted"]

    held = started(
        "confirm me",
        "confirm me please",
        AgentSpec(kind="llm", confirmation_policy={"kind": "AlwaysConfirm"}),  # type: ignore[arg-type]
    )
    aq.pause(held)
    wait_for(lambda: len(calls(held)) == 1, 20, what="the reply recorded while paused")
    assert aq.run(held).status == ConversationStatus.WAITING_FOR_CONFIRMATION
    assert _lines(marks) == ["paused", "interrupted"]
    aq.respond_to_confirmation(held, accept=True)
    _wait_status(aq, held, ConversationStatus.FINISHED)
    assert _lines(marks) == ["paused", "interrupted", "confirmed"]
