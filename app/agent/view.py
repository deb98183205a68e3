"""The messages a model sees, built from a bounded window of the history.

Valid by construction: each assistant message with tool calls is followed
at once by exactly one ``tool`` message per call, with its id, whatever the
events hold: a call's first result wins (the store allows only one anyway),
and the tool message of a crashed call is its ``AgentErrorEvent`` text, of a
rejected one "Action rejected: <reason>". A dangling or duplicated tool
result is what makes real model APIs refuse a conversation for ever.

The window is the newest events, cut where no call is separated from its
results, with the conversation's first user message (the task) kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationErrorEvent,
    Event,
    MessageEvent,
    ObservationEvent,
    UserRejectObservation,
)
from actionq.tools import find_tool

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "MISSING_RESULT",
    "STUCK_CODE",
    "StuckReason",
    "detect_stuck",
    "render_messages",
    "safe_window",
]

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent that does tasks with the tools you are given, in a working folder of "
    "your own. A tool call that crashed is reported as its result: do not repeat it as it "
    "was; find another way. When the task is done, call `finish` with a short summary, or "
    "answer in plain text."
)
MISSING_RESULT = "no result was recorded for this call"
STUCK_CODE = "AgentStuck"  # the ConversationErrorEvent code of a stuck run

# OpenHands' StuckDetectionThresholds: the same call with the same result
# this many times in a row since the last user message.
SAME_OBSERVATION_REPEATS = 4
SAME_ERROR_REPEATS = 3

ResultEvent = ObservationEvent | AgentErrorEvent | UserRejectObservation


def result_text(event: ResultEvent) -> str:
    """What the model reads as a call's result: an observation as JSON, but
    for the keys its tool keeps for clients (``model_omits``: file_editor's
    whole file before and after, which would double every edit's size)."""
    if isinstance(event, ObservationEvent):
        registered = find_tool(event.tool_name)
        shown = event.observation
        if registered is not None and registered.model_omits:
            shown = {k: v for k, v in shown.items() if k not in registered.model_omits}
        return json.dumps(shown, ensure_ascii=False, sort_keys=True)
    if isinstance(event, AgentErrorEvent):
        return event.error
    return f"Action rejected: {event.rejection_reason}"


def _group_key(event: ActionEvent) -> str:
    # Calls posted from outside have no response id: each is its own message.
    return event.llm_response_id or event.id


def safe_window(events: Sequence[Event]) -> list[Event]:
    """The window cut at a safe start: the first user message in it, else the
    first call whose whole response is in it (a response's calls that began
    before the window are dropped, with their results). A window that starts
    with the conversation's first event (``seq`` 1) is whole: kept as is."""
    if events and events[0].seq == 1:
        return list(events)
    for i, event in enumerate(events):
        if isinstance(event, MessageEvent) and event.source == "user":
            return list(events[i:])
    start = None
    for i, event in enumerate(events):
        if not isinstance(event, ActionEvent):
            continue
        if start is None:
            start = (i, _group_key(event))
        elif _group_key(event) != start[1]:
            return list(events[i:])
    # One response only (or none): start at its first call if the window
    # began with it, else nothing is safe to show but what follows no call.
    if start is not None and start[0] == 0:
        return list(events)
    return [] if start is not None else list(events)


def render_messages(
    events: Sequence[Event],
    *,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    first_user_message: MessageEvent | None = None,
) -> list[dict[str, Any]]:
    """OpenAI chat messages for ``events`` (already a safe window)."""
    results: dict[str, ResultEvent] = {}
    for event in events:
        if isinstance(event, ObservationEvent | AgentErrorEvent | UserRejectObservation):
            results.setdefault(event.tool_call_id, event)

    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    if first_user_message is not None and all(e.id != first_user_message.id for e in events):
        messages.append({"role": "user", "content": first_user_message.llm_message.content})

    group: list[ActionEvent] = []
    answered: set[str] = set()

    def close_group() -> None:
        if not group:
            return
        messages.append(
            {
                "role": "assistant",
                "content": group[0].thought or None,
                "tool_calls": [
                    {
                        "id": call.tool_call_id,
                        "type": "function",
                        "function": {
                            "name": call.tool_name,
                            "arguments": json.dumps(call.action, ensure_ascii=False),
                        },
                    }
                    for call in group
                ],
            }
        )
        for call in group:
            result = results.get(call.tool_call_id)
            text = result_text(result) if result is not None else MISSING_RESULT
            messages.append({"role": "tool", "tool_call_id": call.tool_call_id, "content": text})
            answered.add(call.tool_call_id)
        group.clear()

    for event in events:
        if isinstance(event, ActionEvent):
            if event.tool_call_id in answered or any(
                c.tool_call_id == event.tool_call_id for c in group
            ):
                continue  # never two calls with one id
            if group and _group_key(group[0]) != _group_key(event):
                close_group()
            group.append(event)
        elif isinstance(event, MessageEvent):
            close_group()
            role = "assistant" if event.source == "agent" else "user"
            messages.append({"role": role, "content": event.llm_message.content})
    close_group()
    return messages


@dataclass(frozen=True)
class StuckReason:
    repeats: int
    tool: str
    errored: bool

    def __str__(self) -> str:
        what = "error" if self.errored else "result"
        return (
            f"the agent made the same {self.tool} call with the same {what} "
            f"{self.repeats} times in a row"
        )


def detect_stuck(events: Sequence[Event]) -> StuckReason | None:
    """OpenHands' two main stuck patterns, over the events since the last
    user message (or the last time the run was found stuck: a `run` after
    that gives the agent a fresh chance): the same call and the same
    observation 4 times in a row, or the same call and the same error 3 times."""
    last_user = max(
        (
            i
            for i, e in enumerate(events)
            if (isinstance(e, MessageEvent) and e.source == "user")
            or (isinstance(e, ConversationErrorEvent) and e.code == STUCK_CODE)
        ),
        default=-1,
    )
    recent = events[last_user + 1 :]
    calls = {e.tool_call_id: e for e in recent if isinstance(e, ActionEvent)}
    pairs: list[tuple[str, str, str, bool]] = []
    for event in recent:
        if isinstance(event, ObservationEvent | AgentErrorEvent | UserRejectObservation):
            call = calls.get(event.tool_call_id)
            if call is None:
                continue
            arguments = json.dumps(call.action, sort_keys=True)
            pairs.append(
                (call.tool_name, arguments, result_text(event), isinstance(event, AgentErrorEvent))
            )
    if not pairs:
        return None
    last = pairs[-1]
    repeats = 0
    for pair in reversed(pairs):
        if pair != last:
            break
        repeats += 1
    needed = SAME_ERROR_REPEATS if last[3] else SAME_OBSERVATION_REPEATS
    if repeats >= needed:
        return StuckReason(repeats, last[0], last[3])
    return None
