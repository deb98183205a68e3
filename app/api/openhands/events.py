"""actionq's stored events in the exact JSON of OpenHands' SDK event models.

The SDK's models forbid extra fields and unknown ``kind``s, and resolve the
nested ``action``/``observation`` by ``kind`` too, so every event here is
built field by field from what the SDK declares (openhands-sdk 1.58, checked
by tests/openhands). What OpenHands has no field for travels beside the
event (``envelope``): its ``seq``, the action id of a crash, the crash's
``detail`` and a retry's origin. Two fields of the SDK carry actionq's data
where they mean the same thing: an ``AgentErrorEvent``'s ``parent_id`` is the
id of the ``ActionEvent`` it answers, and its ``classification.error_id`` is
``actionq.<cause>``.

Tools OpenHands knows (``terminal``, ``file_editor``, ``finish``, ``think``)
get their own action/observation kinds, so OpenHands' clients render them;
any other tool gets the SDK's generic ``MCPToolAction``/``MCPToolObservation``.
"""

from __future__ import annotations

import json
from typing import Any

from actionq.errors import UnknownToolError
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationErrorEvent,
    ConversationStateUpdateEvent,
    ErrorClassification,
    ErrorDetail,
    Event,
    MessageEvent,
    ObservationEvent,
    UserRejectObservation,
)
from actionq.tools import get_tool

__all__ = ["FAILURE_KINDS", "envelope", "envelope_json", "sdk_event", "sdk_event_json"]

# openhands.sdk.event.error_classification.FailureKind
FAILURE_KINDS = frozenset(
    {"auth", "quota", "rate_limit", "config", "transient", "agent_action", "internal", "unknown"}
)
# actionq's classification kinds that are not OpenHands': a crash is the
# server's failure (internal); a call the tool refused is the agent's.
_KIND_OF = {
    "crash": "internal",
    "tool_exception": "agent_action",
    "invalid_arguments": "agent_action",
    "unknown_tool": "agent_action",
    "cancelled": "agent_action",
}

# Each known tool's action kind and the argument names that action declares.
_ACTIONS: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    # tool: (action kind, required fields, all fields)
    "terminal": (
        "TerminalAction",
        frozenset({"command"}),
        frozenset({"command", "is_input", "timeout", "reset"}),
    ),
    "file_editor": (
        "FileEditorAction",
        frozenset({"command", "path"}),
        frozenset(
            {"command", "path", "file_text", "old_str", "new_str", "insert_line", "view_range"}
        ),
    ),
    "finish": ("FinishAction", frozenset({"message"}), frozenset({"message"})),
    "think": ("ThinkAction", frozenset({"thought"}), frozenset({"thought"})),
}


def _text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def _common(event: Event, parent_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": event.id, "timestamp": event.timestamp, "source": event.source}
    if parent_id is not None:
        data["parent_id"] = parent_id
    return data


def _classification(classification: ErrorClassification | None, error_id: str | None) -> Any:
    if classification is None:
        return None
    kind = _KIND_OF.get(classification.kind, classification.kind)
    data: dict[str, Any] = {
        "kind": kind if kind in FAILURE_KINDS else "unknown",
        "retryable": classification.retryable,
        "user_action": classification.user_action,
    }
    if error_id is not None:
        data["error_id"] = error_id
    return data


def _action(tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    known = _ACTIONS.get(tool)
    if known is None:
        return {"kind": "MCPToolAction", "data": arguments}
    kind, required, fields = known
    if not required <= arguments.keys() or not arguments.keys() <= fields:
        # Arguments the tool refused (the call got an AgentErrorEvent): OpenHands
        # has such a call without an action, and so does this.
        return None
    return {"kind": kind, **arguments}


def _risk(tool: str) -> str:
    try:
        return get_tool(tool).risk
    except UnknownToolError:
        return "UNKNOWN"


def _action_event(event: ActionEvent) -> dict[str, Any]:
    data = _common(event)
    data["thought"] = _text(event.thought) if event.thought else []
    action = _action(event.tool_name, event.action)
    if action is not None:
        data["action"] = action
    arguments = json.dumps(event.action, ensure_ascii=False)
    data.update(
        tool_name=event.tool_name,
        tool_call_id=event.tool_call_id,
        tool_call={
            "id": event.tool_call_id,
            "name": event.tool_name,
            "arguments": arguments,
            "origin": "completion",
        },
        # Required by the SDK; a call posted to the API came from no model
        # response: its own id stands for one.
        llm_response_id=event.llm_response_id or event.id,
        security_risk=_risk(event.tool_name),
        kind="ActionEvent",
    )
    return data


def _str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _observation(tool: str, observation: dict[str, Any]) -> dict[str, Any]:
    is_error = bool(observation.get("is_error", False))
    if tool == "terminal":
        data: dict[str, Any] = {
            "kind": "TerminalObservation",
            "content": _text(_str(observation.get("output", ""))),
            "is_error": is_error,
            "command": observation.get("command"),
            "timeout": bool(observation.get("timed_out", False)),
        }
        if isinstance(observation.get("exit_code"), int):
            data["exit_code"] = observation["exit_code"]
        return data
    if tool == "file_editor":
        data = {
            "kind": "FileEditorObservation",
            "content": _text(_str(observation.get("output", ""))),
            "is_error": is_error,
            "command": observation.get("command", ""),
        }
        for name in ("path", "prev_exist", "old_content", "new_content"):
            if observation.get(name) is not None:
                data[name] = observation[name]
        return data
    if tool == "finish":
        return {
            "kind": "FinishObservation",
            "content": _text(_str(observation.get("message", ""))),
            "is_error": is_error,
        }
    if tool == "think":
        return {
            "kind": "ThinkObservation",
            "content": _text(_str(observation.get("output", "Your thought has been logged."))),
            "is_error": is_error,
        }
    return {
        "kind": "MCPToolObservation",
        "content": _text(json.dumps(observation, ensure_ascii=False, sort_keys=True)),
        "is_error": is_error,
        "tool_name": tool,
    }


def _crash_text(error: str, detail: ErrorDetail) -> str:
    """The error with what actionq knows of the crash: what an OpenHands client
    shows, and has no other field for (the model reads the stored text)."""
    facts = [f"cause: {detail.cause.value}"]
    if detail.signal is not None:
        facts.append(f"signal {detail.signal}")
    if detail.exitcode is not None:
        facts.append(f"exit code {detail.exitcode}")
    if detail.runtime_s is not None:
        facts.append(f"after {detail.runtime_s:.1f} s")
    if detail.max_rss_bytes is not None:
        facts.append(f"peak memory {detail.max_rss_bytes / 2**20:.0f} MiB")
    if detail.attempt is not None:
        facts.append(f"attempt {detail.attempt}")
    return f"{error} [{', '.join(facts)}]"


def sdk_event(event: Event) -> dict[str, Any]:
    """``event`` as the SDK's ``Event.model_dump(mode="json", exclude_none=True)``."""
    if isinstance(event, MessageEvent):
        data = _common(event)
        data["llm_message"] = {
            "role": event.llm_message.role,
            "content": _text(event.llm_message.content),
        }
        if event.llm_response_id is not None:
            data["llm_response_id"] = event.llm_response_id
        data["kind"] = "MessageEvent"
        return data
    if isinstance(event, ActionEvent):
        return _action_event(event)
    if isinstance(event, ObservationEvent):
        data = _common(event)
        data.update(
            tool_name=event.tool_name,
            tool_call_id=event.tool_call_id,
            observation=_observation(event.tool_name, event.observation),
            action_id=event.action_id,
            kind="ObservationEvent",
        )
        return data
    if isinstance(event, AgentErrorEvent):
        data = _common(event, parent_id=event.action_id)
        data.update(
            tool_name=event.tool_name,
            tool_call_id=event.tool_call_id,
            error=_crash_text(event.error, event.detail),
            classification=_classification(
                event.classification, f"actionq.{event.detail.cause.value}"
            ),
            kind="AgentErrorEvent",
        )
        return data
    if isinstance(event, UserRejectObservation):
        data = _common(event)
        data.update(
            tool_name=event.tool_name,
            tool_call_id=event.tool_call_id,
            rejection_reason=event.rejection_reason,
            rejection_source="user",
            action_id=event.action_id,
            kind="UserRejectObservation",
        )
        return data
    if isinstance(event, ConversationStateUpdateEvent):
        data = _common(event)
        data.update(key=event.key, value=event.value, kind="ConversationStateUpdateEvent")
        return data
    if isinstance(event, ConversationErrorEvent):
        data = _common(event)
        data.update(code=event.code, detail=event.detail)
        classification = _classification(event.classification, None)
        if classification is not None:
            data["classification"] = classification
        data["kind"] = "ConversationErrorEvent"
        return data
    raise TypeError(f"no OpenHands shape for {type(event).__name__}")  # pragma: no cover


def sdk_event_json(event: Event) -> str:
    return json.dumps(sdk_event(event), ensure_ascii=False, separators=(",", ":"))


def envelope(event: Event) -> dict[str, Any]:
    """actionq's own view of an event: the OpenHands event and beside it what
    OpenHands has no field for (the native event list and the SSE stream).
    Exactly ``EventEnvelope``'s JSON (tests/openhands/test_projection.py
    holds them together), so both can send it without validating it again:
    a page of 1,000 validated twice cost ~0.1 s."""
    data: dict[str, Any] = {
        "seq": event.seq,
        "event": sdk_event(event),
        "action_id": None,
        "detail": None,
        "retry_of": None,
    }
    if isinstance(event, ActionEvent):
        data["retry_of"] = event.retry_of
    if isinstance(event, AgentErrorEvent):
        data["action_id"] = event.action_id
        data["detail"] = event.detail.model_dump(mode="json")
    return data


def envelope_json(event: Event) -> str:
    """``envelope(event)`` as JSON."""
    return json.dumps(envelope(event), ensure_ascii=False, separators=(",", ":"))
