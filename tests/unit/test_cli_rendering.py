"""How ``actionq conversations show`` and ``tail`` describe each event
(actionq.cli.conversations): one readable detail per kind, cut after a whole
word, and only the signal or exit code an error really has; what they say of
a conversation's agent; how ``create`` reads its agent options. The events
are built as the API sends them: the envelopes of ``/events/page``, made by
the server's own code (``actionq.api.openhands.events``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from actionq.agent.spec import AgentSpec
from actionq.api.openhands.events import envelope
from actionq.api.openhands.info import conversation_info
from actionq.cli.conversations import (
    DETAIL_LIMIT,
    _action_id,
    _agent_facts,
    _confirmation_hint,
    _describe,
    _summary,
    agent_spec,
)
from actionq.crashes.causes import with_output_tail
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    Conversation,
    ConversationErrorEvent,
    ConversationStateUpdateEvent,
    ConversationStatus,
    ErrorCause,
    ErrorClassification,
    ErrorDetail,
    LLMMessage,
    MessageEvent,
    ObservationEvent,
    UserRejectObservation,
)

IDS = {"action_id": "a1", "tool_call_id": "call-1", "tool_name": "terminal"}


def as_sent(event: Any) -> dict[str, Any]:
    """The event as the API sends it to the CLI: its envelope, as JSON."""
    data: dict[str, Any] = json.loads(json.dumps(envelope(event)))
    return data


def error_event(cause: ErrorCause, error: str, **detail: Any) -> dict[str, Any]:
    return as_sent(
        AgentErrorEvent(
            **IDS,
            error=error,
            classification=ErrorClassification(kind="crash", retryable=False),
            detail=ErrorDetail(cause=cause, **detail),
        )
    )


# --- each kind -------------------------------------------------------------------


def test_an_action_shows_its_tool_and_arguments() -> None:
    event = as_sent(ActionEvent(tool_name="terminal", tool_call_id="c", action={"command": "ls"}))
    assert _describe(event) == 'terminal {"command": "ls"}'
    other = as_sent(ActionEvent(tool_name="my_tool", tool_call_id="c", action={"n": 1}))
    assert other["event"]["action"]["kind"] == "MCPToolAction"
    assert _describe(other) == 'my_tool {"n": 1}'


def test_a_call_whose_arguments_the_tool_refused_still_shows_them() -> None:
    refused = as_sent(ActionEvent(tool_name="terminal", tool_call_id="c", action={"cmd": "ls"}))
    assert "action" not in refused["event"]  # OpenHands has no action for it
    assert _describe(refused) == 'terminal {"cmd": "ls"}'


def test_an_observation_shows_exit_code_and_output_trimmed() -> None:
    event = as_sent(ObservationEvent(**IDS, observation={"exit_code": 0, "output": "\n hi \n"}))
    assert _describe(event) == "exit 0: hi"
    failed = as_sent(ObservationEvent(**IDS, observation={"exit_code": 2}))
    assert _describe(failed) == "exit 2: "


def test_a_timed_out_command_says_so() -> None:
    observed = {"exit_code": -1, "output": "partial", "timed_out": True}
    event = as_sent(ObservationEvent(**IDS, observation=observed))
    assert _describe(event) == "exit -1 (timed out): partial"


def test_an_observation_with_an_output_text_shows_it_and_whether_it_is_an_error() -> None:
    editor = IDS | {"tool_name": "file_editor"}
    edited = {"command": "view", "path": "/w/a", "old_content": None, "output": "Here's\n  a"}
    event = as_sent(ObservationEvent(**editor, observation=edited))
    assert event["event"]["observation"]["kind"] == "FileEditorObservation"
    assert _describe(event) == "Here's a"
    failed = as_sent(
        ObservationEvent(**editor, observation={"output": "No edit", "is_error": True})
    )
    assert _describe(failed) == "error: No edit"
    # Another tool's output text reads the same, from its JSON.
    mine = IDS | {"tool_name": "my_tool"}
    said = as_sent(ObservationEvent(**mine, observation={"output": "HI\n there", "n": 2}))
    assert said["event"]["observation"]["kind"] == "MCPToolObservation"
    assert _describe(said) == "HI there"
    ran = as_sent(ObservationEvent(**mine, observation={"exit_code": 3, "output": " x "}))
    assert _describe(ran) == "exit 3: x"


def test_an_observation_without_exit_code_or_output_text_shows_its_json() -> None:
    mine = IDS | {"tool_name": "my_tool"}
    event = as_sent(ObservationEvent(**mine, observation={"content": "text", "size": 4}))
    assert _describe(event) == '{"content": "text", "size": 4}'


@pytest.mark.parametrize(
    ("detail", "shown"),
    [
        ({"signal": 9}, "worker_lost (signal 9): lost"),
        ({"exitcode": 1}, "worker_lost (exit code 1): lost"),
        ({"exitcode": 0}, "worker_lost (exit code 0): lost"),  # 0 is a code, not "none"
        ({"signal": 9, "exitcode": 137}, "worker_lost (signal 9, exit code 137): lost"),
        ({}, "worker_lost: lost"),
        ({"signal": None, "exitcode": None, "pid": 7}, "worker_lost: lost"),
    ],
)
def test_an_error_shows_only_the_signal_or_code_it_has(detail: dict[str, Any], shown: str) -> None:
    summary = _summary(error_event(ErrorCause.WORKER_LOST, "lost", **detail))
    assert summary == shown
    assert "None" not in summary


def test_an_error_shows_its_facts_once_from_the_detail() -> None:
    event = error_event(ErrorCause.WORKER_LOST, "lost", signal=9, attempt=1)
    assert event["event"]["error"] == "lost [cause: worker_lost, signal 9, attempt 1]"
    assert event["detail"]["signal"] == 9
    assert _summary(event) == "worker_lost (signal 9): lost"


def test_a_crash_shows_the_last_line_of_its_output_tail_on_one_line() -> None:
    tail = "line-1\nbefore-crash\n\n"
    error = "the process running this action died (killed by signal 9); it was not re-run"
    event = error_event(ErrorCause.WORKER_LOST, error + with_output_tail(tail), signal=9,
                        output_tail=tail)  # fmt: skip
    assert _describe(event) == f"worker_lost (signal 9): {error} (last output: before-crash)"


def test_an_error_names_its_action() -> None:
    event = error_event(ErrorCause.WORKER_LOST, "lost")
    assert "action_id" not in event["event"]  # OpenHands' AgentErrorEvent has none
    assert _action_id(event) == "a1"
    assert _action_id({"seq": 1, "event": event["event"]}) == "a1"  # its parent_id
    call = as_sent(ActionEvent(id="a1", tool_name="terminal", tool_call_id="c", action={}))
    assert _action_id(call) == "a1"


def test_a_tool_error_says_its_cause_and_message_with_no_signal() -> None:
    event = error_event(ErrorCause.TOOL_EXCEPTION, "tool 'raise_error' raised RuntimeError: boom")
    summary = _summary(event)
    assert summary == "tool_exception: tool 'raise_error' raised RuntimeError: boom"
    assert "signal" not in summary


def test_a_state_change_shows_key_and_value() -> None:
    event = as_sent(ConversationStateUpdateEvent(key="status", value="error"))
    assert _describe(event) == "status -> error"


def test_a_rejection_shows_its_reason() -> None:
    event = as_sent(UserRejectObservation(**IDS, rejection_reason="paused by the user"))
    assert _describe(event) == "paused by the user"


def test_a_kind_this_client_does_not_know_shows_nothing() -> None:
    assert _summary({"seq": 3, "event": {"kind": "SomethingNewEvent"}}) == ""


# --- cutting long details -----------------------------------------------------------


def words(count: int) -> str:
    return " ".join(f"w{i:04}x" for i in range(count))  # 6-character words


def rejection(reason: str) -> dict[str, Any]:
    return as_sent(UserRejectObservation(**IDS, rejection_reason=reason))


def test_a_detail_that_fits_is_not_cut_and_one_more_character_is() -> None:
    text = words(20)[:DETAIL_LIMIT]
    assert _summary(rejection(text)) == text
    cut = _summary(rejection(text + "z"))
    assert cut.endswith("…") and len(cut) <= DETAIL_LIMIT


def test_a_long_detail_is_cut_after_its_last_whole_word() -> None:
    event = as_sent(ObservationEvent(**IDS, observation={"exit_code": 0, "output": words(60)}))
    summary = _summary(event)
    assert len(summary) <= DETAIL_LIMIT and summary.endswith("…")
    kept = summary.removesuffix("…").removeprefix("exit 0: ").split(" ")
    assert kept == words(len(kept)).split(" ")  # whole words only, in order
    assert len(summary) > DETAIL_LIMIT - 8  # and as many as fit


def test_spaces_before_the_cut_are_not_kept() -> None:
    text = "word " + "a" * 100 + "     " + "b" * 40
    summary = _summary(rejection(text))
    assert summary == "word " + "a" * 100 + "…"


def test_one_very_long_word_is_cut_inside_rather_than_dropped() -> None:
    text = "short " + "y" * 300
    summary = _summary(rejection(text))
    assert summary == text[: DETAIL_LIMIT - 1] + "…"
    assert len(summary) == DETAIL_LIMIT


# --- the agent loop ------------------------------------------------------------------


def test_a_message_shows_who_said_what() -> None:
    said = as_sent(MessageEvent(source="user", llm_message=LLMMessage(role="user", content="go")))
    assert _describe(said) == "user: go"
    answer = as_sent(
        MessageEvent(source="agent", llm_message=LLMMessage(role="assistant", content="done"))
    )
    assert _summary(answer) == "agent: done"


def test_a_run_error_shows_its_code_and_detail() -> None:
    event = as_sent(ConversationErrorEvent(code="MaxIterationsReached", detail="2 steps"))
    assert _describe(event) == "MaxIterationsReached: 2 steps"


SCRIPT = AgentSpec(kind="scripted", turns=[{"text": "hi"}])


def conversation(agent: AgentSpec | None = None, **fields: Any) -> dict[str, Any]:
    """A conversation's info as the API sends it (``ConversationInfo``)."""
    base = Conversation(id="c1", status=ConversationStatus.IDLE, created_at="t", updated_at="t")
    state = base.model_copy(update={"agent": agent is not None, **fields})
    info = conversation_info(state, agent, None, "/w/c1", 500)
    shown: dict[str, Any] = info.model_dump(mode="json")
    return shown


def test_agent_facts_say_iteration_and_calls_to_confirm() -> None:
    assert conversation()["agent"] is None
    assert _agent_facts(conversation()) == ""  # no agent: nothing to say
    assert _agent_facts(conversation(SCRIPT)) == "agent, iteration 0"
    waiting = conversation(SCRIPT, iteration=3, pending_confirmation=1)
    assert _agent_facts(waiting) == "agent, iteration 3, 1 call to confirm"
    several = conversation(SCRIPT, iteration=1, pending_confirmation=2)
    assert _agent_facts(several) == "agent, iteration 1, 2 calls to confirm"
    bare = {"id": "c1", "execution_status": "idle", "agent": {"kind": "scripted"}}
    assert _agent_facts(bare) == "agent, iteration 0"


def test_calls_waiting_for_confirmation_say_what_to_run() -> None:
    waiting = ConversationStatus.WAITING_FOR_CONFIRMATION
    one = _confirmation_hint(conversation(SCRIPT, status=waiting, pending_confirmation=1))
    assert one.startswith("1 call waits for confirmation: ")
    assert "`actionq conversations confirm c1` runs it" in one
    assert "`actionq conversations reject c1`" in one
    two = _confirmation_hint(conversation(SCRIPT, status=waiting, pending_confirmation=2))
    assert two.startswith("2 calls wait") and "runs them" in two
    assert _confirmation_hint(conversation(SCRIPT)) == ""
    # A count without the status (a moment between two reads): no hint.
    assert _confirmation_hint(conversation(SCRIPT, pending_confirmation=1)) == ""


# --- `create`'s agent options ------------------------------------------------------------


def test_a_script_file_of_turns_is_a_scripted_agent(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "hi"}]))
    assert agent_spec(script, None, None, None) == {"kind": "scripted", "turns": [{"text": "hi"}]}
    spec = agent_spec(script, None, "always", 7)
    assert spec is not None
    assert spec["confirmation_policy"] == {"kind": "AlwaysConfirm"}
    assert spec["max_iterations"] == 7
    AgentSpec.model_validate(spec)


def test_a_whole_spec_in_the_file_keeps_its_fields_and_options_win(tmp_path: Path) -> None:
    script = tmp_path / "spec.json"
    whole = {
        "turns": [{"text": "hi"}],
        "system_prompt": "be brief",
        "confirmation_policy": {"kind": "AlwaysConfirm"},
    }
    script.write_text(json.dumps(whole))
    assert agent_spec(script, None, None, None) == whole | {"kind": "scripted"}
    spec = agent_spec(script, None, "risky", None)
    assert spec is not None and spec["confirmation_policy"] == {"kind": "ConfirmRisky"}


def test_a_model_profile_is_an_llm_agent() -> None:
    spec = agent_spec(None, "fast", "never", None)
    assert spec == {
        "kind": "llm",
        "model_profile": "fast",
        "confirmation_policy": {"kind": "NeverConfirm"},
    }
    assert agent_spec(None, None, None, None) is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[{", "is not JSON"),
        ('{"kind": "llm", "model_profile": "x"}', "kind scripted"),
        ('"turns"', "a list of turns"),
        ("[]", "at least one turn"),
        ('[{"txt": "hi"}]', "txt"),
        ('[{"tool_calls": [{"tool": ""}]}]', "tool"),
    ],
)
def test_a_bad_script_names_its_file_and_what_is_wrong(
    tmp_path: Path, content: str, says: str
) -> None:
    script = tmp_path / "bad.json"
    script.write_text(content)
    with pytest.raises(click.BadParameter) as refused:
        agent_spec(script, None, None, None)
    message = refused.value.format_message()
    assert str(script) in message and says in message, message
    assert "errors.pydantic.dev" not in message


def test_a_missing_script_says_so(tmp_path: Path) -> None:
    with pytest.raises(click.BadParameter, match=r"cannot read .*missing\.json"):
        agent_spec(tmp_path / "missing.json", None, None, None)


def test_agent_options_without_an_agent_or_with_two_are_refused(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match="need an agent"):
        agent_spec(None, None, "always", None)
    with pytest.raises(click.UsageError, match="need an agent"):
        agent_spec(None, None, None, 3)
    with pytest.raises(click.UsageError, match="give one"):
        agent_spec(tmp_path / "s.json", "default", None, None)
