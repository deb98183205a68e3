"""Finding actions whose worker is gone, and ending them (never re-running them).

``sweep_expired_leases`` is the periodic sweep: it reads only the claims of
workers whose lease expired. ``recover_orphaned_actions`` is the start-up
recovery: it scans every conversation, so it also finds state left by a crash
of the whole system (the original "restored as RUNNING" bug), and it handles
*all* unfinished actions of such a conversation, not only the newest.
Both take ``now`` (Redis server time) so tests can plant expired leases.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime

from actionq.crashes.lost_step import StepSender, requeue_lost_step
from actionq.crashes.stop import crash_action
from actionq.errors import ConversationNotFound, NotFoundError
from actionq.messaging.dispatch import Dispatch, resend_turn
from actionq.models import ActionState, ConversationStatus, ErrorCause
from actionq.store import ActionStore, WorkerIdentity
from actionq.store.agent import STEP_CLAIM

__all__ = [
    "Repairs",
    "audit_own_claims",
    "recover_orphaned_actions",
    "resend_lost_turns",
    "sweep_expired_leases",
]

log = logging.getLogger(__name__)

# A dead worker's index entry for an action it never claimed (it died between
# adding the entry and claiming) is dropped once its lease expired this long ago.
_STALE_ENTRY_SECONDS = 60.0
# A live worker's claim that none of its running tasks holds any more is
# declared abandoned after this long (covers the child reporting its start late).
_ABANDONED_AFTER_SECONDS = 5.0


def sweep_expired_leases(
    store: ActionStore,
    now: float | None = None,
    *,
    step_attempts: int = 3,
    send_step: StepSender | None = None,
) -> list[str]:
    """Error every action claimed by a worker whose lease expired before ``now``
    (and queue again the agent step it ran: a step is safe to repeat).

    Returns the ids of the actions it errored.
    """
    # Conversations older than the per-status index join it (once).
    store.backfill_status_index()
    now = store.server_time() if now is None else now
    errored: list[str] = []
    for worker_id in store.expired_worker_ids(now):
        expiry = store.lease_expiry(worker_id) or 0.0
        for conversation_id, action_id in store.worker_claim_refs(worker_id):
            if action_id == STEP_CLAIM:
                requeue_lost_step(
                    store,
                    conversation_id,
                    worker_id,
                    step_attempts,
                    send_step,
                    f"worker {worker_id} lease expired",
                )
                store.forget_step_claim(worker_id, conversation_id)
                continue
            try:
                action = store.get_action(action_id, conversation_id)
            except NotFoundError:  # the action vanished: nothing to settle
                store.forget_worker_claim(worker_id, conversation_id, action_id)
                continue
            if action.state == ActionState.CLAIMED and action.owner == worker_id:
                if crash_action(
                    store,
                    action,
                    ErrorCause.LEASE_EXPIRED,
                    how=f"worker {worker_id} lease expired",
                    expected_fence=action.fence,
                ):
                    errored.append(action_id)
            elif action.state == ActionState.PENDING and now - expiry < _STALE_ENTRY_SECONDS:
                continue  # its claim may still be in flight
            store.forget_worker_claim(worker_id, conversation_id, action_id)
        store.forget_worker(worker_id, now)
    return errored


def audit_own_claims(
    store: ActionStore,
    worker: WorkerIdentity,
    running_action_ids: set[str],
    now: float | None = None,
    *,
    cause: ErrorCause = ErrorCause.ABANDONED,
    how: str = "its task ended without recording an outcome",
    min_age: float = _ABANDONED_AFTER_SECONDS,
    step_attempts: int = 3,
    send_step: StepSender | None = None,
) -> list[str]:
    """A live worker checks its own claim index: an action still claimed by it
    that none of its running tasks holds ended without an outcome (e.g. Redis
    was unreachable when it finished): error it as ``abandoned``. Entries for
    actions that ended are dropped. At shutdown, with nothing running and
    ``cause=worker_shutdown``, it errors every claim the worker still holds.
    Returns the ids it errored."""
    now = store.server_time() if now is None else now
    errored: list[str] = []
    for conversation_id, action_id in store.worker_claim_refs(worker.id):
        if action_id in running_action_ids:
            continue
        if action_id == STEP_CLAIM:
            step = store.step_state(conversation_id)
            if step["step_owner"] == worker.id and step["step_state"] == "claimed":
                if step["step_task"] in running_action_ids:
                    continue  # being run right now
                requeue_lost_step(store, conversation_id, worker.id, step_attempts, send_step, how)
            store.forget_step_claim(worker.id, conversation_id)
            continue
        try:
            action = store.get_action(action_id, conversation_id)
        except NotFoundError:
            store.forget_worker_claim(worker.id, conversation_id, action_id)
            continue
        if action.state == ActionState.CLAIMED and action.owner == worker.id:
            if now - (action.claimed_at or now) < min_age:
                continue
            if crash_action(store, action, cause, how=how, expected_fence=action.fence):
                errored.append(action_id)
        elif action.state == ActionState.PENDING:
            continue  # a claim in flight
        store.forget_worker_claim(worker.id, conversation_id, action_id)
    return errored


def recover_orphaned_actions(
    store: ActionStore,
    dispatch: Dispatch,
    now: float | None = None,
    *,
    step_attempts: int = 3,
    send_step: StepSender | None = None,
) -> list[str]:
    """Scan every conversation; error the claimed actions of dead workers (and
    with them the actions queued behind), and re-send a lost turn.

    Returns the ids of the actions it errored.
    """
    # Conversations older than the per-status index join it (once).
    store.backfill_status_index()
    now = store.server_time() if now is None else now
    live = set(store.live_worker_ids(now))
    errored: list[str] = []
    for conversation_id in store.iter_conversation_ids():
        try:
            conversation = store.get_conversation(conversation_id)
        except ConversationNotFound:
            # Indexed a moment before it is written (create_conversation):
            # a conversation being created has nothing to recover.
            continue
        if conversation.agent:
            _recover_step(store, conversation_id, live, step_attempts, send_step)
        active_id = conversation.active_action_id
        if active_id is None:
            continue
        action = store.get_action(active_id, conversation_id)
        if action.state == ActionState.CLAIMED and (
            action.owner is None or action.owner not in live
        ):
            if crash_action(
                store,
                action,
                ErrorCause.LEASE_EXPIRED,
                how=f"found at start-up; worker {action.owner} is gone",
                expected_fence=action.fence,
            ):
                errored.append(active_id)
                log.warning(
                    "recovered conversation %s: action %s of dead worker %s errored",
                    conversation_id,
                    active_id,
                    action.owner,
                )
        elif action.state == ActionState.PENDING:
            resend_turn(store, conversation_id, dispatch)
    return errored


def resend_lost_turns(
    store: ActionStore,
    dispatch: Dispatch,
    send_step: StepSender | None,
    *,
    after_seconds: float,
    now: float | None = None,
    limit: int = 1000,
) -> list[str]:
    """Send again the turn of running conversations that waited too long:
    the active action still pending, or the agent step still queued,
    ``after_seconds`` after the conversation last changed (then twice that
    after the first re-send, and so on). Without direct enqueue a turn's
    message is sent after the step that made it runnable, so a process that
    died in between would otherwise leave the conversation running with
    nothing on its way; with it, a message can still be lost after it was
    pushed (a delivery whose retry could not be published while Redis was
    away is rejected by Celery; a Redis broker's failover). A second message
    is harmless: only one delivery can claim the action or the step.

    Returns the conversation ids whose turn it sent.
    """
    now = store.server_time() if now is None else now
    sent: list[str] = []
    for conversation_id in store.running_conversation_ids(limit):
        try:
            conversation = store.get_conversation(conversation_id)
        except ConversationNotFound:
            continue
        if conversation.status != ConversationStatus.RUNNING:
            continue
        waited = now - datetime.fromisoformat(conversation.updated_at).timestamp()
        target = conversation.active_action_id
        if target is not None:
            if store.get_action(target, conversation_id).state != ActionState.PENDING:
                continue
        elif conversation.agent and send_step is not None:
            step = store.step_state(conversation_id)
            if step["step_state"] != "queued":
                continue
            target = STEP_CLAIM
        else:
            continue
        seen = store.resends(conversation_id, target)
        if waited < after_seconds * 2**seen or not store.count_resend(
            conversation_id, target, seen
        ):
            continue
        log.warning(
            "conversation %s has waited %.0f s for its turn (%s): sending it again",
            conversation_id,
            waited,
            "agent step" if target == STEP_CLAIM else f"action {target}",
        )
        if target == STEP_CLAIM:
            assert send_step is not None
            send_step(conversation_id, store.step_state(conversation_id)["step_task"])
        else:
            dispatch(conversation_id, target)
        sent.append(conversation_id)
    return sent


# Under Cluster the per-status index is applied after each transition's
# script; a process that died in between left it stale until this repair.
RECONCILE_INTERVAL_SECONDS = 300.0


class Repairs:
    """The sweeper's slower repairs, each at its own pace (a worker calls
    ``run`` from every sweep): lost turns re-sent, and the per-status index
    reconciled under Cluster. Each is a scan, so of all the workers and
    sweepers one does it per period: a named turn in Redis
    (``take_turn``), left to lapse."""

    def __init__(self, turn_resend_seconds: float) -> None:
        self.turn_resend_seconds = turn_resend_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._next_resend = 0.0
        self._next_reconcile = time.monotonic() + RECONCILE_INTERVAL_SECONDS

    def run(self, store: ActionStore, dispatch: Dispatch, send_step: StepSender | None) -> None:
        now = time.monotonic()
        if self.turn_resend_seconds > 0 and now >= self._next_resend:
            period = self.turn_resend_seconds / 2
            self._next_resend = now + period
            if store.take_turn("resend-turns", self.owner, period):
                resend_lost_turns(
                    store, dispatch, send_step, after_seconds=self.turn_resend_seconds
                )
        if store.cluster and now >= self._next_reconcile:
            self._next_reconcile = now + RECONCILE_INTERVAL_SECONDS
            if store.take_turn("reconcile-status-index", self.owner, RECONCILE_INTERVAL_SECONDS):
                store.reconcile_status_index()


def _recover_step(
    store: ActionStore,
    conversation_id: str,
    live: set[str],
    step_attempts: int,
    send_step: StepSender | None,
) -> None:
    """The agent step of a dead worker is queued again; a queued step's
    message is sent again (it may have been lost; only one delivery claims)."""
    step = store.step_state(conversation_id)
    if step["step_state"] == "claimed" and step["step_owner"] not in live:
        requeue_lost_step(
            store,
            conversation_id,
            step["step_owner"],
            step_attempts,
            send_step,
            f"found at start-up; worker {step['step_owner']} is gone",
        )
    elif step["step_state"] == "queued" and send_step is not None:
        send_step(conversation_id, step["step_task"])
