"""RemoteConversation rides out the death of its API server: the test
SIGKILLs the `actionq api` process the client talks to while a run is on the
workers, lets the run go on without it, and starts the API again on the same
port. The client's socket reconnects (with the SDK's backoff), reconciles
over REST, and the run ends with every event in the client's list once.

Env: OH_CLIENT_MESSAGE (the task), OH_CLIENT_ID_FILE (gets the
conversation's id once it exists), OH_CLIENT_RECONNECTED_FILE (touched when
the socket is back: the second full_state snapshot, which the SDK hands on
only after it reconciled; the first came when it connected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _common import finish, make_agent, make_conversation, require, run_script
from openhands.sdk.event import ConversationStateUpdateEvent, Event

FULL_STATE = "full_state"


def is_snapshot(event: Event) -> bool:
    return isinstance(event, ConversationStateUpdateEvent) and event.key == FULL_STATE


def main() -> None:
    reconnected = Path(require("OH_CLIENT_RECONNECTED_FILE"))
    seen: list[Event] = []

    def on_event(event: Event) -> None:  # the socket's thread
        seen.append(event)
        if sum(map(is_snapshot, seen)) == 2:
            reconnected.touch()

    conversation = make_conversation(make_agent(), callbacks=[on_event], delete_on_close=False)
    Path(require("OH_CLIENT_ID_FILE")).write_text(str(conversation.id))
    conversation.send_message(require("OH_CLIENT_MESSAGE"))
    conversation.run(timeout=150)
    events = list(conversation.state.events)
    result: dict[str, Any] = {
        "id": str(conversation.id),
        "status": conversation.state.execution_status.value,
        "snapshots": sum(map(is_snapshot, seen)),
        # Stored events only: the client keeps the socket's snapshots in its
        # list too, and each is a new event (as with OpenHands' server).
        "list_ids": [e.id for e in events if not is_snapshot(e)],
        "callback_ids": [e.id for e in seen if not is_snapshot(e)],
    }
    # While the server is gone the client logs each failed request as an ERROR.
    finish(result, conversation, expected_errors=("Request failed:",))


if __name__ == "__main__":
    run_script(main)
