"""Small readers over a conversation's events, for assertions."""

from __future__ import annotations

import base64
import json
from typing import Any

from actionq.models import TERMINAL_EVENT_KINDS, AgentErrorEvent, Event
from actionq.service import ActionQ


def events_of(aq: ActionQ, conversation_id: str) -> list[Event]:
    return aq.store.all_events(conversation_id)


def terminal_events(aq: ActionQ, conversation_id: str, action_id: str) -> list[Event]:
    return [
        e
        for e in events_of(aq, conversation_id)
        if e.kind in TERMINAL_EVENT_KINDS and getattr(e, "action_id", None) == action_id
    ]


def only_error(aq: ActionQ, conversation_id: str, action_id: str) -> AgentErrorEvent:
    terminal = terminal_events(aq, conversation_id, action_id)
    assert len(terminal) == 1, f"expected one terminal event, got {terminal}"
    assert isinstance(terminal[0], AgentErrorEvent), terminal[0]
    return terminal[0]


def assert_log_consistent(aq: ActionQ, conversation_id: str) -> None:
    """seq contiguous from 1; ids unique; no action has two terminal events."""
    events = events_of(aq, conversation_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)
    ended = [getattr(e, "action_id", None) for e in events if e.kind in TERMINAL_EVENT_KINDS]
    assert len(ended) == len(set(ended)), f"an action ended twice: {ended}"


def status_changes(aq: ActionQ, conversation_id: str) -> list[str]:
    return [
        str(e.value)
        for e in events_of(aq, conversation_id)
        if e.kind == "ConversationStateUpdateEvent"
    ]


def count_lines(path: object) -> int:
    from pathlib import Path

    p = Path(str(path))
    return len(p.read_text().splitlines()) if p.exists() else 0


def celery_body(message: dict[str, Any]) -> Any:
    """The decoded body of a message as kombu's Redis transport stores it
    (task messages and events alike: base64 JSON)."""
    assert message["properties"]["body_encoding"] == "base64"
    return json.loads(base64.b64decode(message["body"]))


# --- the HTTP API's JSON: events in OpenHands' SDK shapes, in envelopes ------------


def text_of(content: list[dict[str, Any]]) -> str:
    """The text of OpenHands' content parts (``[{"type": "text", "text": ...}]``)."""
    assert all(part["type"] == "text" for part in content), content
    return "".join(part["text"] for part in content)


def tool_result(observation: dict[str, Any]) -> dict[str, Any]:
    """What a tool OpenHands does not know returned: an ``MCPToolObservation``
    carries it as the JSON text of its content."""
    assert observation["kind"] == "MCPToolObservation", observation
    result: dict[str, Any] = json.loads(text_of(observation["content"]))
    return result


def sdk_events(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The OpenHands events in envelopes of ``/events/page``."""
    return [e["event"] for e in envelopes]
