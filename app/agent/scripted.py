"""An agent that plays a script: demos, tests and benchmarks, with no model.

Like a model it reads the messages: the turn it plays is the number of its
replies already in them, so a step that runs again after a crash plays the
same turn, and after the script's last turn it answers "done" (which ends
the run as ``finished``).
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
    def __init__(self, turns: list[ScriptedTurn]) -> None:
        self.turns = turns

    def reply(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, step: int
    ) -> AgentReply:
        played = sum(1 for m in messages if m["role"] == "assistant")
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
