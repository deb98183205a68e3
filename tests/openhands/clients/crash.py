"""The seed's scenario through OpenHands' client: the model's tool call kills
its worker; the client sees the run end in error, with an AgentErrorEvent for
that call; after a new message and `run` the agent goes on and finishes.

Env: OH_CLIENT_MESSAGE (first message), OH_CLIENT_FOLLOW_UP."""

from __future__ import annotations

from typing import Any

from _common import finish, make_agent, make_conversation, require, run_script
from openhands.sdk.conversation.exceptions import ConversationRunError
from openhands.sdk.event import ActionEvent, AgentErrorEvent


def main() -> None:
    # Kept after close: the test reads its events back.
    conversation = make_conversation(make_agent(), delete_on_close=False)
    conversation.send_message(require("OH_CLIENT_MESSAGE"))
    run_error = None
    try:
        conversation.run(timeout=120)
    except ConversationRunError as exc:
        run_error = str(exc)
    status_after_crash = conversation.state.execution_status.value
    events = list(conversation.state.events)
    calls = [e for e in events if isinstance(e, ActionEvent)]
    errors = [e for e in events if isinstance(e, AgentErrorEvent)]
    conversation.send_message(require("OH_CLIENT_FOLLOW_UP"))
    conversation.run(timeout=120)
    result: dict[str, Any] = {
        "id": str(conversation.id),
        "run_error": run_error,
        "status_after_crash": status_after_crash,
        "call_ids": [c.tool_call_id for c in calls],
        "errors": [e.model_dump(mode="json", exclude_none=True) for e in errors],
        "final_status": conversation.state.execution_status.value,
        "kinds": [type(e).__name__ for e in conversation.state.events],
    }
    finish(result, conversation)


if __name__ == "__main__":
    run_script(main)
