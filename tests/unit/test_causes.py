"""The table of causes (actionq.crashes.causes): every cause has a row, and
the events built from it say what the table says."""

from __future__ import annotations

import pytest

from actionq.crashes.causes import CAUSES, agent_error_event
from actionq.models import ActionRecord, ActionState, ConversationStatus, ErrorCause


def _action() -> ActionRecord:
    return ActionRecord(
        id="a1", conversation_id="c1", state=ActionState.CLAIMED, tool="terminal",
        arguments={"command": "x"}, tool_call_id="call_a1", fingerprint="f", created_at="t",
    )  # fmt: skip


def test_every_cause_has_a_row() -> None:
    assert set(CAUSES) == set(ErrorCause)


@pytest.mark.parametrize("cause", list(ErrorCause))
def test_a_crash_stops_its_conversation_in_error_and_is_never_retryable(cause: ErrorCause) -> None:
    rule = CAUSES[cause]
    if rule.crash:
        assert rule.action_state == ActionState.ERRORED
        assert rule.conversation_status == ConversationStatus.ERROR
        assert not rule.retryable
        assert rule.message and "not re-run" in rule.message


@pytest.mark.parametrize("cause", [c for c in ErrorCause if CAUSES[c].message is not None])
def test_events_carry_the_table_message_and_classification(cause: ErrorCause) -> None:
    event = agent_error_event(_action(), cause, how="signal 9", signal=9)
    rule = CAUSES[cause]
    assert event.error == rule.message.format(how="signal 9")  # type: ignore[union-attr]
    assert event.classification.kind == ("crash" if rule.crash else cause.value)
    assert event.classification.retryable == rule.retryable
    assert event.detail.cause == cause and event.detail.signal == 9
    assert (event.action_id, event.tool_call_id, event.tool_name) == ("a1", "call_a1", "terminal")


def test_a_cause_without_a_message_needs_the_writers_text() -> None:
    with pytest.raises(ValueError, match="tool_exception"):
        agent_error_event(_action(), ErrorCause.TOOL_EXCEPTION)
    event = agent_error_event(_action(), ErrorCause.TOOL_EXCEPTION, "tool raised KeyError")
    assert event.error == "tool raised KeyError" and event.classification.retryable
