"""actionq's projection of every kind of event it stores (app/api/openhands/
events.py) validates in the SDK's own models: each tool's action and
observation, a crash of every cause, a refused call, the state and error
events. No server: the stored events are built here, as the writers build them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actionq.api.openhands.events import envelope, sdk_event
from actionq.api.schemas import EventEnvelope
from actionq.crashes.causes import CAUSES, agent_error_event
from actionq.models import (
    ActionEvent,
    ActionRecord,
    ActionState,
    ConversationErrorEvent,
    ConversationStateUpdateEvent,
    ErrorClassification,
    LLMMessage,
    MessageEvent,
    ObservationEvent,
    UserRejectObservation,
)

Validate = Callable[[list[dict[str, Any]]], list[str]]

CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "terminal": (
        {"command": "echo hi", "timeout": 5.0},
        {"command": "echo hi", "exit_code": 0, "output": "hi\n", "truncated": False,
         "timed_out": False, "duration_s": 0.01},
    ),
    "file_editor": (
        {"command": "str_replace", "path": "a.txt", "old_str": "a", "new_str": "b"},
        {"command": "str_replace", "path": "/w/a.txt", "prev_exist": True, "old_content": "a",
         "new_content": "b", "output": "edited", "is_error": False},
    ),
    "think": ({"thought": "hmm"}, {"output": "Your thought has been logged."}),
    "finish": ({"message": "all done"}, {"message": "all done"}),
    "file_read": ({"path": "a.txt"}, {"content": "b", "truncated": False}),
}  # fmt: skip


def _record(action: ActionEvent) -> ActionRecord:
    return ActionRecord(
        id=action.id, conversation_id="c1", state=ActionState.ERRORED, tool=action.tool_name,
        arguments=action.action, tool_call_id=action.tool_call_id, fingerprint="f",
        created_at=action.timestamp,
    )  # fmt: skip


def stored_events() -> list[Any]:
    events: list[Any] = [
        MessageEvent(source="user", llm_message=LLMMessage(role="user", content="do it")),
        ConversationStateUpdateEvent(key="execution_status", value="running"),
    ]
    for i, (tool, (arguments, observation)) in enumerate(CALLS.items()):
        call = ActionEvent(
            tool_name=tool, tool_call_id=f"call_{i}", action=arguments, thought="because",
            llm_response_id="resp-1",
        )  # fmt: skip
        result = ObservationEvent(
            action_id=call.id, tool_call_id=call.tool_call_id, tool_name=tool,
            observation=observation,
        )  # fmt: skip
        events += [call, result]
    # A call posted to the API (no model response), with arguments the tool refused.
    refused = ActionEvent(tool_name="terminal", tool_call_id="call_x", action={"cmd": "ls"})
    events.append(refused)
    for cause, rule in CAUSES.items():
        text = None if rule.message is not None else f"{cause.value} happened"
        events.append(agent_error_event(_record(refused), cause, text, signal=9, attempt=1))
    events += [
        UserRejectObservation(
            action_id=refused.id, tool_call_id="call_x", tool_name="terminal",
            rejection_reason="no",
        ),
        ConversationErrorEvent(
            code="RateLimitError", detail="slow down",
            classification=ErrorClassification(kind="rate_limit", retryable=True,
                                               user_action="retry"),
        ),
        ConversationErrorEvent(code="NoClassification", detail="x"),
        MessageEvent(source="agent", llm_message=LLMMessage(role="assistant", content="done"),
                     llm_response_id="resp-2"),
    ]  # fmt: skip
    return events


def test_every_stored_event_validates_in_the_sdk(validate_events: Validate) -> None:
    events = stored_events()
    assert {e.kind for e in events} >= {
        "MessageEvent", "ActionEvent", "ObservationEvent", "AgentErrorEvent",
        "UserRejectObservation", "ConversationStateUpdateEvent", "ConversationErrorEvent",
    }  # fmt: skip
    assert validate_events([sdk_event(e) for e in events]) == []


def test_known_tools_get_their_own_kinds_and_crashes_say_what_happened() -> None:
    projected = [sdk_event(e) for e in stored_events()]
    actions = {p["tool_name"]: p.get("action", {}).get("kind") for p in projected
               if p["kind"] == "ActionEvent" and p["tool_call_id"] != "call_x"}  # fmt: skip
    assert actions == {
        "terminal": "TerminalAction", "file_editor": "FileEditorAction", "think": "ThinkAction",
        "finish": "FinishAction", "file_read": "MCPToolAction",
    }  # fmt: skip
    observations = {p["tool_name"]: p["observation"]["kind"] for p in projected
                    if p["kind"] == "ObservationEvent"}  # fmt: skip
    assert observations == {
        "terminal": "TerminalObservation", "file_editor": "FileEditorObservation",
        "think": "ThinkObservation", "finish": "FinishObservation",
        "file_read": "MCPToolObservation",
    }  # fmt: skip
    refused = next(p for p in projected if p.get("tool_call_id") == "call_x")
    assert "action" not in refused  # OpenHands' non-executable call
    crash = next(
        p for p in projected
        if p["kind"] == "AgentErrorEvent" and "worker_lost" in p["classification"]["error_id"]
    )  # fmt: skip
    assert crash["parent_id"] == refused["id"]
    assert crash["classification"] == {
        "kind": "internal", "retryable": False, "user_action": "none",
        "error_id": "actionq.worker_lost",
    }  # fmt: skip
    assert crash["error"].endswith("[cause: worker_lost, signal 9, attempt 1]")


def test_the_envelope_carries_what_openhands_has_no_field_for() -> None:
    events = stored_events()
    crash = next(e for e in events if e.kind == "AgentErrorEvent")
    crash.seq = 7
    wrapped = envelope(crash)
    assert wrapped["seq"] == 7
    assert wrapped["action_id"] == crash.action_id
    assert wrapped["detail"]["signal"] == 9
    assert "seq" not in wrapped["event"] and "detail" not in wrapped["event"]


def test_the_envelope_is_exactly_what_the_documented_model_gives() -> None:
    """/events/page and the SSE stream send envelope() as it is, not through
    EventEnvelope (the page's documented model): the two must not drift."""
    events = stored_events()
    kinds = {e.kind for e in events}
    assert {"ActionEvent", "AgentErrorEvent", "MessageEvent"} <= kinds
    for seq, event in enumerate(events, 1):
        event.seq = seq
        wrapped = envelope(event)
        assert EventEnvelope.model_validate(wrapped).model_dump(mode="json") == wrapped
