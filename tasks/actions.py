"""The Celery task that runs one agent action."""

from __future__ import annotations

from functools import partial

from celery import Task

from actionq.errors import ClaimUnavailableError
from actionq.messaging.celery_app import RUN_ACTION_TASK, get_celery_app
from actionq.messaging.dispatch import send_action, step_sender
from actionq.runtime import get_store
from actionq.settings import get_settings
from actionq.tasks.execution import execute_action
from actionq.tasks.identity import current_worker

__all__ = ["run_action"]

celery_app = get_celery_app()


@celery_app.task(  # type: ignore[untyped-decorator]
    name=RUN_ACTION_TASK,
    bind=True,
    acks_late=True,
    # A crashed action is reported by the task_failure handler, never requeued:
    # requeueing a poison action is the crash loop this project exists to stop.
    reject_on_worker_lost=False,
    ignore_result=True,
    time_limit=get_settings().action_time_limit,
)
def run_action(self: Task, conversation_id: str, action_id: str) -> str:
    try:
        return execute_action(
            get_store(),
            get_settings(),
            current_worker(),
            conversation_id,
            action_id,
            partial(send_action, celery_app, get_settings().queue),
            step_sender(celery_app, get_settings()),
        )
    except ClaimUnavailableError as e:
        # Redis was unreachable before anything ran: deliver again later.
        raise self.retry(exc=e, countdown=2, max_retries=None) from e
