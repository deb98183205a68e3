"""Sending an action's Celery message. Only the store decides *which* action
may run next; this only delivers it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from celery import Celery
from kombu.exceptions import OperationalError

from actionq.errors import BrokerUnavailableError
from actionq.models import ActionState, ConversationStatus
from actionq.settings import Settings
from actionq.store import ActionStore
from actionq.store.records import RunResult

__all__ = [
    "Dispatch",
    "action_argsrepr",
    "resend_turn",
    "send_action",
    "send_step",
    "send_work",
    "step_argsrepr",
    "step_sender",
]

log = logging.getLogger(__name__)

Dispatch = Callable[[str, str], None]
"""``dispatch(conversation_id, action_id)``: send the message that runs the action."""


def action_argsrepr(conversation_id: str, action_id: str) -> str:
    """What Flower shows as the task's arguments: ids only, never the call's
    arguments (they live in the store)."""
    return f"(conversation={conversation_id}, action={action_id})"


def send_action(app: Celery, queue: str, conversation_id: str, action_id: str) -> None:
    """Send the task that runs ``action_id``. The task id is the action id, so
    Flower and ``celery inspect`` show actions by their own id. Sending twice is
    harmless: the claim lets only one delivery run the tool."""
    from actionq.messaging.celery_app import RUN_ACTION_TASK

    try:
        app.send_task(
            RUN_ACTION_TASK,
            args=[conversation_id, action_id],
            task_id=action_id,
            queue=queue,
            argsrepr=action_argsrepr(conversation_id, action_id),
            ignore_result=True,  # outcomes live in the event log
        )
    except OperationalError as e:
        raise BrokerUnavailableError(f"broker unavailable, action {action_id} not sent: {e}") from e
    log.debug("dispatched action %s of conversation %s", action_id, conversation_id)


def step_argsrepr(conversation_id: str) -> str:
    return f"(conversation={conversation_id}, agent step)"


def send_step(app: Celery, queue: str, conversation_id: str, task_id: str) -> None:
    """Send the agent step the store queued as ``task_id`` (without direct
    enqueue; with it the store's script pushed the message itself). Sending
    twice is harmless: only the step's current task id can claim it."""
    from actionq.messaging.celery_app import AGENT_STEP_TASK

    try:
        app.send_task(
            AGENT_STEP_TASK,
            args=[conversation_id],
            task_id=task_id,
            queue=queue,
            argsrepr=step_argsrepr(conversation_id),
            ignore_result=True,
        )
    except OperationalError as e:
        raise BrokerUnavailableError(
            f"broker unavailable, agent step {task_id} not sent: {e}"
        ) from e


def step_sender(app: Celery, settings: Settings) -> Callable[[str, str], None]:
    """``send_step`` bound to the app and the agent queue: ``(cid, task_id)``."""
    return partial(send_step, app, settings.agent_queue)


def send_work(
    conversation_id: str,
    result: RunResult,
    dispatch: Dispatch,
    send_step: Callable[[str, str], None],
) -> None:
    """Send what a store transition made runnable (an action, an agent step),
    unless its own script already pushed the message (direct enqueue)."""
    if result.dispatch_action_id and not result.pushed:
        dispatch(conversation_id, result.dispatch_action_id)
    if result.step_task_id and not result.step_pushed:
        send_step(conversation_id, result.step_task_id)


def resend_turn(
    store: ActionStore,
    conversation_id: str,
    dispatch: Dispatch,
    *,
    only: str | None = None,
    skip: str | None = None,
) -> bool:
    """Send the conversation's turn again if its message may have been lost:
    the conversation runs and its active action is still pending (the process
    that should have sent it died, the send failed, or the broker kept
    nothing). A second message is harmless: only one delivery can claim it.
    ``only``/``skip`` restrict it to, or exclude, one action id."""
    conversation = store.get_conversation(conversation_id)
    active = conversation.active_action_id
    if (
        active is None
        or (only is not None and active != only)
        or active == skip
        or conversation.status != ConversationStatus.RUNNING
        or store.get_action(active, conversation_id).state != ActionState.PENDING
    ):
        return False
    dispatch(conversation_id, active)
    return True
