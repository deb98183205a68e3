"""Confirmation through OpenHands' client: AlwaysConfirm, run -> waiting;
reject -> UserRejectObservation; a new message, run -> waiting on a new
call; run again (OpenHands' approval) -> it runs, and the agent finishes.

Env: OH_CLIENT_MESSAGE, OH_CLIENT_FOLLOW_UP."""

from __future__ import annotations

from typing import Any

from _common import finish, make_agent, make_conversation, require, run_script
from openhands.sdk.conversation.state import ConversationExecutionStatus
from openhands.sdk.event import UserRejectObservation
from openhands.sdk.security.confirmation_policy import AlwaysConfirm


def status(conversation: Any) -> str:
    value: ConversationExecutionStatus = conversation.state.execution_status
    return value.value


def main() -> None:
    conversation = make_conversation(make_agent())
    conversation.set_confirmation_policy(AlwaysConfirm())
    policy = type(conversation.state.confirmation_policy).__name__
    conversation.send_message(require("OH_CLIENT_MESSAGE"))
    conversation.run(timeout=120)
    first_wait = status(conversation)
    conversation.reject_pending_actions("not that one")
    conversation.state.events.reconcile()
    rejected = [
        e.model_dump(mode="json", exclude_none=True)
        for e in conversation.state.events
        if isinstance(e, UserRejectObservation)
    ]
    after_reject = conversation.state.refresh_from_server()["execution_status"]
    conversation.send_message(require("OH_CLIENT_FOLLOW_UP"))
    conversation.run(timeout=120)
    second_wait = status(conversation)
    conversation.run(timeout=120)  # approves the call that waits
    result: dict[str, Any] = {
        "id": str(conversation.id),
        "policy": policy,
        "first_wait": first_wait,
        "rejected": rejected,
        "after_reject": after_reject,
        "second_wait": second_wait,
        "final_status": status(conversation),
        "kinds": [type(e).__name__ for e in conversation.state.events],
    }
    finish(result, conversation)


if __name__ == "__main__":
    run_script(main)
