"""A pool child died (killed, OOM, hard time limit) while it held a delivery:
what the worker's main process does about it (``task_failure``).

The child may have died before its claim (the tool never ran: the message
is sent again, at most ``MAX_LOST_BEFORE_CLAIM`` times), while the action ran
(a crash: ``crash_action``), or after the action had ended (its next turn may
not have been sent: send it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from actionq.crashes.stop import crash_action
from actionq.errors import NotFoundError, StoreUnavailableError
from actionq.messaging.dispatch import Dispatch, resend_turn
from actionq.models import ActionState, ErrorCause
from actionq.store import ActionStore, WorkerIdentity

__all__ = ["MAX_LOST_BEFORE_CLAIM", "UnsettledLosses", "settle_lost_task"]

log = logging.getLogger(__name__)

# A delivery whose process died before it could claim the action never ran
# the tool: it is sent again, at most this many times.
MAX_LOST_BEFORE_CLAIM = 3


def settle_lost_task(
    store: ActionStore,
    worker: WorkerIdentity,
    conversation_id: str,
    action_id: str,
    cause: ErrorCause,
    dispatch: Dispatch,
    *,
    how: str = "",
    signal: int | None = None,
    exitcode: int | None = None,
    killed_by: str | None = None,
) -> str:
    """The process running a delivery of ``action_id`` died (killed, OOM,
    time limit). Called in the worker's main process. Returns what it did.
    ``killed_by``: ``oom_killer`` if the kernel is known to have killed it."""
    try:
        action = store.get_action(action_id, conversation_id)
    except NotFoundError:
        return "missing"
    if action.state == ActionState.CLAIMED and action.owner == worker.id:
        crash_action(
            store,
            action,
            cause,
            how=how,
            signal=signal,
            exitcode=exitcode,
            expected_fence=action.fence,
            killed_by=killed_by,
        )
        return "errored"
    if action.state == ActionState.PENDING:
        if store.get_conversation(conversation_id).active_action_id != action_id:
            return "not its turn"
        # It died before claiming: the tool never ran, so it may be sent again.
        if store.count_lost_delivery(conversation_id, action_id) < MAX_LOST_BEFORE_CLAIM:
            dispatch(conversation_id, action_id)
            return "sent again"
        crash_action(
            store, action, cause, how=how, signal=signal, exitcode=exitcode, killed_by=killed_by
        )
        return "errored"
    # Ended already, or claimed by another worker (this was a redelivery). If the
    # child died right after finishing, the next action may not have been sent.
    if resend_turn(store, conversation_id, dispatch, skip=action_id):
        return "sent the next action"
    return "already settled"


class UnsettledLosses:
    """Lost deliveries whose settling could not reach Redis (the store was
    away when the child died), kept in the worker's main process and settled
    again by its periodic sweep before the claim audit, which would otherwise
    call them ``abandoned``: a child killed during an outage or a failover
    still ends as what it was (``worker_lost``, its signal and exit code)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Callable[[], str]] = {}

    def settle(self, action_id: str, settle: Callable[[], str]) -> str:
        """Run ``settle`` (a ``settle_lost_task`` call); keep it for later if
        the store is unavailable. Returns what it did."""
        try:
            return settle()
        except StoreUnavailableError as e:
            with self._lock:
                self._pending[action_id] = settle
            log.warning(
                "lost delivery of action %s is settled once the store is back: %s", action_id, e
            )
            return "deferred"

    def retry(self) -> dict[str, str]:
        """Settle the kept ones, oldest first, until the store fails again;
        what each one did, by action id."""
        with self._lock:
            pending = list(self._pending.items())
        settled: dict[str, str] = {}
        for action_id, settle in pending:
            try:
                settled[action_id] = settle()
            except StoreUnavailableError:
                break  # still away: the next sweep tries again
            except Exception:  # never again: the claim audit settles it
                log.exception("settling the lost delivery of action %s failed", action_id)
                settled[action_id] = "failed"
            with self._lock:
                self._pending.pop(action_id, None)
        return settled

    def action_ids(self) -> set[str]:
        """The actions still kept (the claim audit leaves them alone)."""
        with self._lock:
            return set(self._pending)
