"""The check of a store failover mid-run, shared by the Cluster and the
Sentinel tests: actions run on every conversation, the primary dies, its
replica takes over; afterwards every acknowledged action is there with
exactly one outcome, and no command ran twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from actionq.errors import StoreUnavailableError
from actionq.models import ActionState, ConversationStatus
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, count_lines, terminal_events
from tests.helpers import wait_for

__all__ = ["run_through_a_failover"]


def run_through_a_failover(
    aq: ActionQ,
    start_worker: WorkerFactory,
    workdir: Path,
    *,
    kill: Callable[[str], int],
    waits: Callable[[], int],
    conversations: int = 8,
) -> None:
    """``kill(conversation_id)`` kills the primary that holds that
    conversation and returns once its replica serves; ``waits()`` counts the
    WAIT commands the primaries ran (replica acks must have been asked for)."""
    # Lost broker messages (a Redis broker's writes are not waited for) are
    # sent again by the sweep within seconds.
    start_worker("w1", concurrency=2, ACTIONQ_TURN_RESEND_SECONDS="2")
    start_worker("w2", concurrency=2, ACTIONQ_TURN_RESEND_SECONDS="2")
    marker = workdir / "ran.log"
    cids = [aq.create_conversation().id for _ in range(conversations)]
    submitted: dict[str, str] = {}

    def submit_round(name: str) -> None:
        for cid in cids:
            line = f"{cid} {name}"  # one line per action: a second run shows
            arguments = {"marker_file": str(marker), "line": line, "seconds": 0.05}
            for attempt in range(100):
                try:
                    action = aq.submit_action(cid, "sleep_after_mark", arguments)
                    break
                except StoreUnavailableError:  # failing over: a client retries
                    if attempt == 99:
                        raise
                    time.sleep(0.1)
            submitted[action.id] = cid

    submit_round("before")
    wait_for(lambda: count_lines(marker) >= 2, 30, what="actions to start running")
    assert kill(cids[0])
    submit_round("after")

    def settled() -> bool:
        try:
            return all(
                aq.get_conversation(cid).status
                in (ConversationStatus.IDLE, ConversationStatus.ERROR)
                for cid in cids
            )
        except StoreUnavailableError:
            return False

    wait_for(settled, 120, what="every conversation to settle after the failover")
    for action_id, cid in submitted.items():
        action = aq.get_action(action_id)
        assert action.state in (ActionState.DONE, ActionState.ERRORED), action
        assert len(terminal_events(aq, cid, action_id)) == 1, action_id
    for cid in cids:
        assert_log_consistent(aq, cid)
    ran = Counter(marker.read_text().splitlines())
    assert max(ran.values()) == 1, ran.most_common(3)
    assert waits() > 0
