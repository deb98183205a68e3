"""The agent loop with the scripted agent and real workers (a prefork tool
worker, a thread-pool agent worker): the crash story, parallel calls, a
step that runs twice, pause and interrupt, confirmation, the loop's limits."""

from __future__ import annotations

from pathlib import Path

from actionq.agent.spec import AgentSpec, AlwaysConfirm, ScriptedCall, ScriptedTurn
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationErrorEvent,
    ConversationStatus,
    MessageEvent,
    ObservationEvent,
    UserRejectObservation,
)
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, events_of
from tests.helpers import wait_for


def _status(aq: ActionQ, cid: str, *statuses: ConversationStatus) -> bool:
    return aq.get_conversation(cid).status in statuses


def _wait_status(aq: ActionQ, cid: str, status: ConversationStatus, timeout: float = 30) -> None:
    wait_for(lambda: _status(aq, cid, status), timeout, what=f"conversation {status.value}")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def scripted(*turns: ScriptedTurn, **extra: object) -> AgentSpec:
    return AgentSpec(kind="scripted", turns=list(turns), **extra)  # type: ignore[arg-type]


def call(tool: str, **arguments: object) -> ScriptedCall:
    return ScriptedCall(tool=tool, arguments=arguments)


def test_a_crashed_call_is_the_agents_result_and_never_runs_again(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    agent = scripted(
        ScriptedTurn(
            tool_calls=[call("sleep_after_mark", marker_file=str(marks), line="first", seconds=0)]
        ),
        ScriptedTurn(tool_calls=[call("kill_own_process", marker_file=str(marks), line="poison")]),
        ScriptedTurn(
            text="That crashed: {last_result}. Trying another way.",
            tool_calls=[call("sleep_after_mark", marker_file=str(marks), line="other", seconds=0)],
        ),
        ScriptedTurn(tool_calls=[call("finish", message="done another way")]),
    )
    start_worker("tools")
    start_worker("agent", agent=True, concurrency=4)
    cid = aq.create_conversation(agent=agent).id
    aq.send_message(cid, "do the task", run=True)
    _wait_status(aq, cid, ConversationStatus.ERROR)

    events = events_of(aq, cid)
    errors = [e for e in events if isinstance(e, AgentErrorEvent)]
    assert [e.detail.cause for e in errors] == ["worker_lost"]
    assert errors[0].tool_name == "kill_own_process"
    assert _lines(marks) == ["first", "poison"]

    aq.send_message(cid, "try another way", run=True)
    _wait_status(aq, cid, ConversationStatus.FINISHED)
    events = events_of(aq, cid)
    assert _lines(marks) == ["first", "poison", "other"]  # the poison ran once
    retry = [e for e in events if isinstance(e, ActionEvent) and e.action.get("line") == "other"]
    assert len(retry) == 1
    # The agent read the crash as that call's result.
    assert "died" in retry[0].thought and "not re-run" in retry[0].thought
    assert [e.tool_name for e in events if isinstance(e, ActionEvent)] == [
        "sleep_after_mark",
        "kill_own_process",
        "sleep_after_mark",
        "finish",
    ]
    assert_log_consistent(aq, cid)


def test_parallel_calls_the_second_kills_its_worker(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """One response, three calls, run one after another (each its own job):
    the first keeps its observation, the second is errored, the third never
    started (not_run); the next step's messages answer every call once."""
    marks = tmp_path / "marks"
    agent = scripted(
        ScriptedTurn(
            tool_calls=[
                call("sleep_after_mark", marker_file=str(marks), line="a", seconds=0),
                call("kill_own_process", marker_file=str(marks), line="b"),
                call("sleep_after_mark", marker_file=str(marks), line="c", seconds=0),
            ]
        ),
        ScriptedTurn(text="{last_result}"),
    )
    start_worker("tools")
    start_worker("agent", agent=True)
    cid = aq.create_conversation(agent=agent).id
    aq.send_message(cid, "three at once", run=True)
    _wait_status(aq, cid, ConversationStatus.ERROR)
    events = events_of(aq, cid)
    calls = [e for e in events if isinstance(e, ActionEvent)]
    assert len({c.llm_response_id for c in calls}) == 1
    results = {
        e.tool_call_id: e
        for e in events
        if isinstance(e, ObservationEvent | AgentErrorEvent | UserRejectObservation)
    }
    first, second, third = (results[c.tool_call_id] for c in calls)
    assert isinstance(first, ObservationEvent)
    assert isinstance(second, AgentErrorEvent) and second.detail.cause == "worker_lost"
    assert isinstance(third, AgentErrorEvent) and third.detail.cause == "not_run"
    assert _lines(marks) == ["a", "b"]

    aq.run(cid)
    _wait_status(aq, cid, ConversationStatus.FINISHED)
    answer = [e for e in events_of(aq, cid) if isinstance(e, MessageEvent) and e.source == "agent"]
    # The scripted agent echoes the last tool message it was given: the not_run error.
    assert len(answer) == 1 and "not" in answer[0].llm_message.content
    assert_log_consistent(aq, cid)


def test_confirmation_survives_a_restart_reject_then_accept(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    agent = scripted(
        ScriptedTurn(
            tool_calls=[call("sleep_after_mark", marker_file=str(marks), line="x", seconds=0)]
        ),
        ScriptedTurn(
            text="rejected: {last_result}",
            tool_calls=[call("sleep_after_mark", marker_file=str(marks), line="y", seconds=0)],
        ),
        ScriptedTurn(text="all done"),
        confirmation_policy=AlwaysConfirm(),
    )
    tools = start_worker("tools")
    steps = start_worker("agent", agent=True)
    cid = aq.create_conversation(agent=agent).id
    aq.send_message(cid, "careful", run=True)
    _wait_status(aq, cid, ConversationStatus.WAITING_FOR_CONFIRMATION)
    assert aq.get_conversation(cid).pending_confirmation == 1
    tools.stop(timeout=10)
    steps.stop(timeout=10)
    start_worker("tools2")
    start_worker("agent2", agent=True)
    assert aq.get_conversation(cid).status == ConversationStatus.WAITING_FOR_CONFIRMATION

    aq.respond_to_confirmation(cid, accept=False, reason="not that one")
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE
    aq.run(cid)
    _wait_status(aq, cid, ConversationStatus.WAITING_FOR_CONFIRMATION)
    events = events_of(aq, cid)
    rejections = [e for e in events if isinstance(e, UserRejectObservation)]
    assert [r.rejection_reason for r in rejections] == ["not that one"]
    second = [e for e in events if isinstance(e, ActionEvent)][-1]
    assert "Action rejected: not that one" in second.thought

    aq.respond_to_confirmation(cid, accept=True)
    _wait_status(aq, cid, ConversationStatus.FINISHED)
    assert _lines(marks) == ["y"]
    assert_log_consistent(aq, cid)


def test_max_iterations_ends_the_run_with_an_error_event(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    turns = [
        ScriptedTurn(
            tool_calls=[call("sleep_after_mark", marker_file=str(marks), line=str(i), seconds=0)]
        )
        for i in range(5)
    ]
    start_worker("tools")
    start_worker("agent", agent=True)
    cid = aq.create_conversation(agent=scripted(*turns, max_iterations=2)).id
    aq.send_message(cid, "go", run=True)
    _wait_status(aq, cid, ConversationStatus.ERROR)
    errors = [e for e in events_of(aq, cid) if isinstance(e, ConversationErrorEvent)]
    assert [e.code for e in errors] == ["MaxIterationsReached"]
    assert _lines(marks) == ["0", "1"]


def test_the_same_call_and_error_three_times_is_stuck(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    same = ScriptedTurn(tool_calls=[call("raise_error", message="nope")])
    start_worker("tools")
    start_worker("agent", agent=True)
    cid = aq.create_conversation(agent=scripted(same, same, same, same, same)).id
    aq.send_message(cid, "go", run=True)
    _wait_status(aq, cid, ConversationStatus.STUCK)
    events = events_of(aq, cid)
    assert len([e for e in events if isinstance(e, ActionEvent)]) == 3
    assert [e.code for e in events if isinstance(e, ConversationErrorEvent)] == ["AgentStuck"]
