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

from app.dispatch import Dispatch
from app.lifecycle import crash_action
from app.models import ActionState, ConversationStatus, ErrorCause
from app.store import ActionStore

__all__ = ["recover_orphaned_actions", "sweep_expired_leases"]

log = logging.getLogger(__name__)

# A dead worker's claim-index entry for an action it never claimed is kept this
# long after its lease expired (the claim may be in flight), then dropped.
_STALE_ENTRY_SECONDS = 60.0


def _owner_is_dead(store: ActionStore, owner: str | None, live: set[str]) -> bool:
    return owner is None or owner not in live


def sweep_expired_leases(store: ActionStore, now: float | None = None) -> list[str]:
    """Error every action claimed by a worker whose lease expired before ``now``.

    Returns the ids of the actions it errored.
    """
    now = store.server_time() if now is None else now
    errored: list[str] = []
    for worker_id in store.expired_worker_ids(now):
        pending_left = False
        for conversation_id, action_id in store.worker_claim_refs(worker_id):
            try:
                action = store.get_action(action_id, conversation_id)
            except Exception:  # the action vanished: nothing to settle
                store.forget_worker_claim(worker_id, conversation_id, action_id)
                continue
            if action.state == ActionState.CLAIMED and action.owner == worker_id:
                if crash_action(
                    store,
                    conversation_id,
                    action_id,
                    ErrorCause.LEASE_EXPIRED,
                    how=f"worker {worker_id} lease expired",
                    expected_fence=action.fence,
                ):
                    errored.append(action_id)
            elif action.state == ActionState.PENDING:
                pending_left = True
                continue
            store.forget_worker_claim(worker_id, conversation_id, action_id)
        if not pending_left:
            store.forget_worker(worker_id)
    return errored


def recover_orphaned_actions(
    store: ActionStore, dispatch: Dispatch, now: float | None = None
) -> list[str]:
    """Scan every conversation; error the claimed actions of dead workers (and
    with them the actions queued behind), and re-send a lost turn.

    Returns the ids of the actions it errored.
    """
    now = store.server_time() if now is None else now
    live = set(store.live_worker_ids(now))
    errored: list[str] = []
    for conversation_id in store.iter_conversation_ids():
        conversation = store.get_conversation(conversation_id)
        active_id = conversation.active_action_id
        if active_id is None:
            continue
        action = store.get_action(active_id, conversation_id)
        if action.state == ActionState.CLAIMED and _owner_is_dead(store, action.owner, live):
            if crash_action(
                store,
                conversation_id,
                active_id,
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
        elif (
            action.state == ActionState.PENDING
            and conversation.status == ConversationStatus.RUNNING
        ):
            # Its message may have been lost with a broker that kept nothing;
            # sending it again is safe: only one delivery can claim it.
            dispatch(conversation_id, active_id)
    return errored
