"""The model's messages (actionq.agent.view), the scripted agent and the
confirmation policy: pure functions over events."""

from __future__ import annotations

from typing import Any

import pytest

from actionq.agent.scripted import ScriptedAgent
from actionq.agent.spec import (
    AgentSpec,
    AlwaysConfirm,
    ConfirmRisky,
    NeverConfirm,
    ScriptedCall,
    ScriptedTurn,
    needs_confirmation,
)
from actionq.agent.view import (
    MISSING_RESULT,
    STUCK_CODE,
    detect_stuck,
    render_messages,
    safe_window,
)
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationErrorEvent,
    ConversationStateUpdateEvent,
    ErrorCause,
    ErrorClassification,
    ErrorDetail,
    Event,
    LLMMessage,
    MessageEvent,
    ObservationEvent,
    UserRejectObservation,
)


def user(text: str) -> MessageEvent:
    return MessageEvent(source="user", llm_message=LLMMessage(role="user", content=text))


def act(call_id: str, response: str | None = "r1", thought: str = "", **args: Any) -> ActionEvent:
    return ActionEvent(
        id=f"a-{call_id}",
        tool_name="terminal",
        tool_call_id=call_id,
        action=args or {"command": call_id},
        thought=thought,
        llm_response_id=response,
    )


def obs(call_id: str, output: str = "ok") -> ObservationEvent:
    return ObservationEvent(
        action_id=f"a-{call_id}",
        tool_call_id=call_id,
        tool_name="terminal",
        observation={"output": output},
    )


def err(call_id: str, text: str = "the process running this action died") -> AgentErrorEvent:
    return AgentErrorEvent(
        error=text,
        tool_name="terminal",
        tool_call_id=call_id,
        action_id=f"a-{call_id}",
        classification=ErrorClassification(kind="crash", retryable=False),
        detail=ErrorDetail(cause=ErrorCause.WORKER_LOST),
    )


def assert_valid(messages: list[dict[str, Any]]) -> None:
    """What model APIs require: each assistant tool call answered at once,
    exactly once, by a tool message with its id; no other tool message."""
    i = 0
    seen: set[str] = set()
    while i < len(messages):
        message = messages[i]
        assert message["role"] != "tool", f"a tool message without its call at {i}"
        calls = [c["id"] for c in message.get("tool_calls") or []]
        assert not seen & set(calls), "a call id used twice"
        seen |= set(calls)
        answers = [m["tool_call_id"] for m in messages[i + 1 : i + 1 + len(calls)]]
        assert answers == calls
        assert all(m["role"] == "tool" for m in messages[i + 1 : i + 1 + len(calls)])
        i += 1 + len(calls)


def test_a_parallel_response_is_one_assistant_message_then_its_results_in_order() -> None:
    events: list[Event] = [
        user("task"),
        act("c1", thought="let me look"),
        act("c2"),
        act("c3"),
        obs("c1", "one"),
        ConversationStateUpdateEvent(key="execution_status", value="error"),
        err("c2"),
        err("c3", "not run"),
    ]
    messages = render_messages(events)
    assert_valid(messages)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "tool"]
    assert messages[2]["content"] == "let me look"
    assert [m["content"] for m in messages[3:]] == [
        '{"output": "one"}',
        "the process running this action died",
        "not run",
    ]


def test_rejection_text_and_a_call_without_result_stay_valid() -> None:
    rejected = UserRejectObservation(
        action_id="a-c1", tool_call_id="c1", tool_name="terminal", rejection_reason="no"
    )
    messages = render_messages([user("t"), act("c1"), rejected, act("c2", response="r2")])
    assert_valid(messages)
    assert messages[3]["content"] == "Action rejected: no"
    assert messages[-1]["content"] == MISSING_RESULT


def test_a_duplicated_result_or_call_never_reaches_the_model() -> None:
    messages = render_messages([user("t"), act("c1"), obs("c1", "first"), obs("c1", "second")])
    assert_valid(messages)
    assert [m["content"] for m in messages if m["role"] == "tool"] == ['{"output": "first"}']
    messages = render_messages([user("t"), act("c1"), obs("c1"), act("c1", response="r2")])
    assert_valid(messages)
    assert sum(1 for m in messages if m["role"] == "tool") == 1


def test_calls_posted_from_outside_are_each_their_own_message() -> None:
    messages = render_messages(
        [act("c1", response=None), act("c2", response=None), obs("c1"), obs("c2")]
    )
    assert_valid(messages)
    assert sum(1 for m in messages if m["role"] == "assistant") == 2


def test_the_window_never_starts_inside_a_response_and_keeps_the_task() -> None:
    task = user("the task")
    tail: list[Event] = [act("c2"), obs("c1"), obs("c2"), act("c3", response="r3"), obs("c3")]
    window = safe_window(tail)
    assert [e.kind for e in window] == ["ActionEvent", "ObservationEvent"]
    messages = render_messages(window, first_user_message=task)
    assert_valid(messages)
    assert messages[1] == {"role": "user", "content": "the task"}
    # The whole history (from seq 1) is kept as it is.
    whole = [act("c1"), obs("c1"), act("c2", response="r2"), obs("c2")]
    whole[0].seq = 1
    assert safe_window(whole) == whole
    # A user message in the window is a safe start; the task is not repeated.
    window = safe_window([obs("c0"), task, act("c1"), obs("c1")])
    assert window[0] is task
    assert [m["role"] for m in render_messages(window, first_user_message=task)].count("user") == 1


def test_stuck_same_error_three_times_or_same_result_four_times() -> None:
    def same_error(n: int) -> list[Event]:
        events: list[Event] = [user("t")]
        for i in range(n):
            events += [act(f"c{i}", response=f"r{i}", command="x"), err(f"c{i}", "boom")]
        return events

    assert detect_stuck(same_error(2)) is None
    stuck = detect_stuck(same_error(3))
    assert stuck is not None and stuck.errored and stuck.repeats == 3
    same_result: list[Event] = [user("t")]
    for i in range(4):
        same_result += [act(f"c{i}", response=f"r{i}", command="x"), obs(f"c{i}", "same")]
    assert detect_stuck(same_result[:-2]) is None
    assert detect_stuck(same_result) is not None
    # A new user message starts the count again, and so does a run after
    # the agent was found stuck.
    assert detect_stuck([*same_error(3), user("try again")]) is None
    found = ConversationErrorEvent(code=STUCK_CODE, detail="stuck")
    assert detect_stuck([*same_error(3), found, *same_error(2)[1:]]) is None


def test_the_scripted_agent_plays_the_turn_of_its_replies_so_far() -> None:
    turns = [
        ScriptedTurn(tool_calls=[ScriptedCall(tool="terminal", arguments={"command": "a"})]),
        ScriptedTurn(text="saw: {last_result}"),
    ]
    first = ScriptedAgent(turns, played=0).reply([{"role": "user", "content": "t"}], [], step=1)
    assert [c.name for c in first.tool_calls] == ["terminal"] and first.text == ""
    # The window may hold fewer replies than were recorded: the count decides.
    history = [
        {"role": "user", "content": "t"},
        {"role": "tool", "tool_call_id": "x", "content": "crashed"},
    ]
    assert ScriptedAgent(turns, played=1).reply(history, [], step=2).text == "saw: crashed"
    # Again (a step that ran again): the same turn.
    assert ScriptedAgent(turns, played=1).reply(history, [], step=2).text == "saw: crashed"
    done = ScriptedAgent(turns, played=2).reply(history, [], step=3)
    assert done.text == "done" and not done.tool_calls


@pytest.mark.parametrize(
    ("policy", "risk", "expected"),
    [
        (NeverConfirm(), "HIGH", False),
        (AlwaysConfirm(), "LOW", True),
        (ConfirmRisky(), "HIGH", True),
        (ConfirmRisky(), "MEDIUM", False),
        (ConfirmRisky(threshold="MEDIUM"), "MEDIUM", True),
        (ConfirmRisky(), "UNKNOWN", True),
        (ConfirmRisky(confirm_unknown=False), "UNKNOWN", False),
    ],
)
def test_confirmation_policies(policy: Any, risk: str, expected: bool) -> None:
    assert needs_confirmation(policy, risk) is expected


def test_agent_specs_refuse_credentials_and_empty_scripts() -> None:
    with pytest.raises(ValueError, match="extra"):
        AgentSpec.model_validate({"kind": "llm", "api_key": "sk-secret"})
    with pytest.raises(ValueError, match="at least one turn"):
        AgentSpec(kind="scripted")
