"""The Celery task of one agent step (a model call), on the agent queue.

It runs on a thread pool (``actionq worker --agent``): a step mostly waits on
the model, so one process holds many conversations' steps at once, while
tool calls stay on the prefork queue where a crash hits only its own process.
"""

from __future__ import annotations

from functools import lru_cache, partial

from celery import Task

from actionq.errors import StoreUnavailableError
from actionq.messaging.celery_app import AGENT_STEP_TASK, RUN_ACTION_TASK, get_celery_app
from actionq.messaging.direct_enqueue import TaskMessages
from actionq.messaging.dispatch import send_action, step_sender
from actionq.runtime import get_store
from actionq.settings import get_settings
from actionq.tasks.identity import current_worker
from actionq.tasks.step_execution import StepContext, execute_step

__all__ = ["agent_step"]

celery_app = get_celery_app()


@lru_cache(maxsize=1)
def _context() -> StepContext:
    settings = get_settings()
    store = get_store()
    messages = None
    if store.broker is not None:
        messages = TaskMessages(celery_app, RUN_ACTION_TASK, settings.queue, settings.task_events)
    return StepContext(
        settings,
        current_worker(),
        partial(send_action, celery_app, settings.queue),
        step_sender(celery_app, settings),
        messages,
    )


@celery_app.task(  # type: ignore[untyped-decorator]
    name=AGENT_STEP_TASK,
    bind=True,
    acks_late=True,
    # A step lost with its worker is queued again by actionq (a new task id,
    # a bounded number of times), never by the broker.
    reject_on_worker_lost=False,
    ignore_result=True,
)
def agent_step(self: Task, conversation_id: str) -> str:
    try:
        return execute_step(get_store(), _context(), conversation_id, self.request.id)
    except StoreUnavailableError as e:
        # Redis was unreachable: deliver again later; the claim decides.
        raise self.retry(exc=e, countdown=2, max_retries=None) from e
