"""Direct enqueue with a real prefork worker: actions run in order whether the
store pushes their messages or Celery's ``send_task`` does (the store side:
tests/store/test_direct_enqueue.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actionq.models import ActionState, ConversationStatus, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.conftest import WorkerFactory
from tests.events import assert_log_consistent, terminal_events


@pytest.mark.parametrize("direct", [True, False], ids=["direct-enqueue", "send-task"])
def test_actions_run_in_order_either_way(
    direct: bool,
    settings: Settings,
    start_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    """The same run through a real prefork worker: with the store pushing the
    messages, and with Celery's send_task doing it."""
    start_worker(ACTIONQ_DIRECT_ENQUEUE=str(direct).lower())
    with ActionQ(settings.model_copy(update={"direct_enqueue": direct})) as aq:
        assert (aq.store.broker is not None) == direct
        marker = tmp_path / "order.txt"
        cids = [aq.create_conversation().id for _ in range(2)]
        actions = [
            aq.submit_action(cid, "terminal", {"command": f"echo {cid}-{i} >> {marker}"})
            for i in range(3)
            for cid in cids
        ]
        for action in actions:
            assert aq.wait_for_action(action.id, 30).state == ActionState.DONE
        lines = marker.read_text().split()
        for cid in cids:
            assert [line for line in lines if line.startswith(cid)] == [
                f"{cid}-{i}" for i in range(3)
            ]
            assert aq.get_conversation(cid).status == ConversationStatus.IDLE
            assert_log_consistent(aq, cid)
        for action in actions:
            [event] = terminal_events(aq, action.conversation_id, action.id)
            assert isinstance(event, ObservationEvent)
