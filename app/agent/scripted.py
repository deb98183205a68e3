"""An agent that plays a script: demos, tests and benchmarks, with no model.

The turn it plays is the number of its replies already recorded in the
conversation (counted by the store, not from the bounded window of messages),
so a step that runs again after a crash plays the same turn; after the
script's last turn it answers "done" (which ends the run as ``finished``).
"""

from __future__ import annotations

import uuid
from typing import Any

from actionq.agent.base import AgentReply, ToolCall
from actionq.agent.spec import ScriptedTurn

__all__ = ["ScriptedAgent"]


def _last_tool_result(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "tool":
            return str(message["content"])
    return ""


class ScriptedAgent:
    def __init__(self, turns: list[ScriptedTurn], played: int) -> None:
        self.turns = turns
        self.played = played  # replies already recorded: the turn to play

    def reply(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, step: int
    ) -> AgentReply:
        played = self.played
        response_id = f"scripted-{uuid.uuid4().hex}"
        if played >= len(self.turns):
            return AgentReply(response_id, text="done")
        turn = self.turns[played]
        text = turn.text.replace("{last_result}", _last_tool_result(messages))
        calls = [
            ToolCall(f"call_{uuid.uuid4().hex}", call.tool, dict(call.arguments))
            for call in turn.tool_calls
        ]
        return AgentReply(response_id, text=text, tool_calls=calls)
