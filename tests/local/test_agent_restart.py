"""A conversation waiting for confirmation survives stopping everything:
`actionq up` (its embedded server, its tool worker, its agent worker) is
stopped and started again on the same data folder; the held call still
waits, a rejection reaches the agent, an accepted call runs once."""

from __future__ import annotations

from pathlib import Path

from actionq.agent.spec import AgentSpec, AlwaysConfirm, ScriptedCall, ScriptedTurn
from actionq.models import ActionEvent, ConversationStatus, UserRejectObservation
from actionq.service import ActionQ
from tests.helpers import wait_for
from tests.up_process import client_of, kill_up, start_up, stop_up


def _wait(aq: ActionQ, cid: str, status: ConversationStatus) -> None:
    wait_for(lambda: aq.get_conversation(cid).status == status, 60, what=status.value)


def test_a_held_call_waits_across_a_full_restart(tmp_path: Path) -> None:
    data = tmp_path / ".actionq"
    marks = tmp_path / "marks"
    agent = AgentSpec(
        kind="scripted",
        confirmation_policy=AlwaysConfirm(),
        turns=[
            ScriptedTurn(
                tool_calls=[
                    ScriptedCall(
                        tool="sleep_after_mark",
                        arguments={"marker_file": str(marks), "line": "first", "seconds": 0},
                    )
                ]
            ),
            ScriptedTurn(
                text="{last_result}",
                tool_calls=[
                    ScriptedCall(
                        tool="sleep_after_mark",
                        arguments={"marker_file": str(marks), "line": "second", "seconds": 0},
                    )
                ],
            ),
            ScriptedTurn(text="done"),
        ],
    )
    up = start_up(data, tmp_path / "up.log")
    try:
        with client_of(up) as aq:
            cid = aq.create_conversation(agent=agent).id
            aq.send_message(cid, "careful now", run=True)
            _wait(aq, cid, ConversationStatus.WAITING_FOR_CONFIRMATION)
        assert stop_up(up) == 0
    finally:
        kill_up(up)

    up = start_up(data, tmp_path / "up2.log")
    try:
        with client_of(up) as aq:
            conversation = aq.get_conversation(cid)
            assert conversation.status == ConversationStatus.WAITING_FOR_CONFIRMATION
            assert conversation.pending_confirmation == 1
            assert not marks.exists()  # nothing ran while it waited

            aq.respond_to_confirmation(cid, accept=False, reason="not the first one")
            aq.run(cid)
            _wait(aq, cid, ConversationStatus.WAITING_FOR_CONFIRMATION)
            events = aq.all_events(cid)
            [rejection] = [e for e in events if isinstance(e, UserRejectObservation)]
            assert rejection.rejection_reason == "not the first one"
            second = [e for e in events if isinstance(e, ActionEvent)][-1]
            assert second.thought == "Action rejected: not the first one"

            aq.respond_to_confirmation(cid, accept=True)
            _wait(aq, cid, ConversationStatus.FINISHED)
            assert marks.read_text().splitlines() == ["second"]
    finally:
        stop_up(up)
        kill_up(up)
