"""Hand-written events in the exact shapes of shared/research/openhands.md §2,
as the agent-server writes them (``model_dump(mode="json", exclude_none=True)``):
what actionq's projection must produce, and what the SDK accepts."""

from __future__ import annotations

from typing import Any

ACTION_ID = "8b0c5e0e-6a52-4c43-9d51-3c3f0e7c0a01"
TEXT: dict[str, Any] = {"cache_prompt": False, "type": "text"}

ACTION: dict[str, Any] = {
    "id": ACTION_ID,
    "timestamp": "2026-12-01T20:08:25.523378",
    "source": "agent",
    "thought": [TEXT | {"text": "list the files"}],
    "thinking_blocks": [],
    "action": {"command": "ls", "is_input": False, "reset": False, "kind": "TerminalAction"},
    "tool_name": "terminal",
    "tool_call_id": "call_1",
    "tool_call": {
        "id": "call_1",
        "name": "terminal",
        "arguments": '{"command": "ls"}',
        "origin": "completion",
    },
    "llm_response_id": "resp-1",
    "security_risk": "UNKNOWN",
    "summary": "terminal: ls",
    "kind": "ActionEvent",
}
OBSERVATION: dict[str, Any] = {
    "id": "8b0c5e0e-6a52-4c43-9d51-3c3f0e7c0a02",
    "timestamp": "2026-12-01T20:08:26.000001",
    "source": "environment",
    "tool_name": "terminal",
    "tool_call_id": "call_1",
    "observation": {
        "content": [TEXT | {"text": "a.txt\n"}],
        "is_error": False,
        "command": "ls",
        "exit_code": 0,
        "timeout": False,
        "metadata": {"exit_code": 0, "pid": -1, "working_dir": "/w", "prefix": "", "suffix": ""},
        "kind": "TerminalObservation",
    },
    "action_id": ACTION_ID,
    "kind": "ObservationEvent",
}
AGENT_ERROR: dict[str, Any] = {
    "id": "8b0c5e0e-6a52-4c43-9d51-3c3f0e7c0a03",
    "timestamp": "2026-12-01T20:08:27.000001",
    "source": "agent",
    "tool_name": "terminal",
    "tool_call_id": "call_2",
    "error": "the worker running this command was killed (signal 9)",
    "classification": {"kind": "internal", "retryable": False, "user_action": "none"},
    "kind": "AgentErrorEvent",
}
STATE_UPDATE: dict[str, Any] = {
    "id": "8b0c5e0e-6a52-4c43-9d51-3c3f0e7c0a04",
    "timestamp": "2026-12-01T20:08:28.000001",
    "source": "environment",
    "key": "execution_status",
    "value": "running",
    "kind": "ConversationStateUpdateEvent",
}
MESSAGE: dict[str, Any] = {
    "id": "8b0c5e0e-6a52-4c43-9d51-3c3f0e7c0a05",
    "timestamp": "2026-12-01T20:08:24.000001",
    "source": "user",
    "llm_message": {"role": "user", "content": [TEXT | {"text": "hello"}], "thinking_blocks": []},
    "activated_skills": [],
    "extended_content": [],
    "kind": "MessageEvent",
}
DOCUMENTED: list[dict[str, Any]] = [MESSAGE, ACTION, OBSERVATION, AGENT_ERROR, STATE_UPDATE]
