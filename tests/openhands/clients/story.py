"""RemoteConversation runs a task to `finished`: send a message, run, and
report what the client saw on its WebSocket and in its event list.

Env: OH_CLIENT_MESSAGE (the task: the fake model's script key)."""

from __future__ import annotations

from typing import Any

from _common import finish, make_agent, make_conversation, require, run_script
from openhands.sdk.event import Event


def main() -> None:
    seen: list[Event] = []
    # Kept after close: the test reads it back (the factory deletes it by default).
    conversation = make_conversation(make_agent(), callbacks=[seen.append], delete_on_close=False)
    conversation.send_message(require("OH_CLIENT_MESSAGE"))
    conversation.run(timeout=120)
    events = list(conversation.state.events)
    result: dict[str, Any] = {
        "id": str(conversation.id),
        "status": conversation.state.execution_status.value,
        "socket_kinds": [type(e).__name__ for e in seen],
        "socket_ids": [e.id for e in seen],
        "list_ids": [e.id for e in events],
        "list": [e.model_dump(mode="json", exclude_none=True) for e in events],
    }
    finish(result, conversation)


if __name__ == "__main__":
    run_script(main)
