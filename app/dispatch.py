"""Sending an action's Celery message. Only the store decides *which* action
may run next; this only delivers it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from kombu.exceptions import OperationalError

from app.errors import StoreUnavailableError

__all__ = ["Dispatch", "send_action"]

log = logging.getLogger(__name__)

Dispatch = Callable[[str, str], None]
"""``dispatch(conversation_id, action_id)``: send the message that runs the action."""


def send_action(app: Celery, queue: str, conversation_id: str, action_id: str) -> None:
    """Send the task that runs ``action_id``. The task id is the action id, so
    Flower and ``celery inspect`` show actions by their own id. Sending twice is
    harmless: the claim lets only one delivery run the tool."""
    from app.celery_app import RUN_ACTION_TASK

    try:
        app.send_task(
            RUN_ACTION_TASK,
            args=[conversation_id, action_id],
            task_id=action_id,
            queue=queue,
            # Arguments live in the store; Flower shows only these ids.
            argsrepr=f"(conversation={conversation_id}, action={action_id})",
        )
    except OperationalError as e:
        raise StoreUnavailableError(f"broker unavailable, action {action_id} not sent: {e}") from e
    log.debug("dispatched action %s of conversation %s", action_id, conversation_id)
