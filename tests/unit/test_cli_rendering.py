"""How ``actionq conversations show`` and ``tail`` describe each event
(actionq.cli.conversations): one readable detail per kind, cut after a whole
word, and only the signal or exit code an error really has."""

from __future__ import annotations

from typing import Any

import pytest

from actionq.cli.conversations import DETAIL_LIMIT, _describe, _summary
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationStateUpdateEvent,
    ErrorCause,
    ErrorClassification,
    ErrorDetail,
    ObservationEvent,
    UserRejectObservation,
)

IDS = {"action_id": "a1", "tool_call_id": "call-1", "tool_name": "terminal"}


def as_sent(event: Any) -> dict[str, Any]:
    """The event as the API sends it to the CLI (JSON)."""
    data: dict[str, Any] = event.model_dump(mode="json")
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


def test_an_observation_shows_exit_code_and_output_trimmed() -> None:
    event = as_sent(ObservationEvent(**IDS, observation={"exit_code": 0, "output": "\n hi \n"}))
    assert _describe(event) == "exit 0: hi"
    failed = as_sent(ObservationEvent(**IDS, observation={"exit_code": 2}))
    assert _describe(failed) == "exit 2: "


def test_an_observation_without_exit_code_shows_its_json() -> None:
    event = as_sent(ObservationEvent(**IDS, observation={"content": "text", "size": 4}))
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
    assert _summary({"kind": "SomethingNewEvent", "seq": 3}) == ""


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
