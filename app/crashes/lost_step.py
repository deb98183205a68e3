"""An agent step whose worker is gone (its lease expired, its pool process
died, it shut down): the step is queued again, since a step only asks the
model and records its reply once, up to ``ACTIONQ_AGENT_STEP_ATTEMPTS``
deliveries; then the conversation goes to ``error`` with a
``ConversationErrorEvent`` (a step that kills its worker every time is a
poison too). Tool calls are never requeued: that is ``crashes.stop``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from actionq.models import ConversationErrorEvent, ErrorClassification
from actionq.store import ActionStore

__all__ = ["StepSender", "requeue_lost_step"]

log = logging.getLogger(__name__)

StepSender = Callable[[str, str], None]
"""``send_step(conversation_id, task_id)``: send the agent step's message."""


def requeue_lost_step(
    store: ActionStore,
    conversation_id: str,
    owner: str,
    max_attempts: int,
    send_step: StepSender | None,
    how: str,
) -> str:
    """Returns what it did: requeued | errored | dropped | skip."""
    error = ConversationErrorEvent(
        code="AgentStepLost",
        detail=f"the worker running the agent's step died {max_attempts} time(s) ({how}); "
        "the step was not run again",
        classification=ErrorClassification(kind="internal", retryable=True, user_action="retry"),
    )
    outcome, task_id, pushed = store.requeue_step(conversation_id, owner, max_attempts, error)
    if task_id and not pushed and send_step is not None:
        send_step(conversation_id, task_id)
    if outcome != "skip":
        log.warning("agent step of conversation %s (%s): %s", conversation_id, how, outcome)
    return outcome
