"""Redis gone for longer than a worker keeps trying to record an outcome.

The worker retries the finish for ~35 s (``tasks/execution.py``); past that
its task gives up and the action is left claimed, its message unacked. When
Redis is back, whichever comes first must end it with exactly one
``AgentErrorEvent``, and nothing may run twice: the worker's own claim audit
(cause ``abandoned``), the lease sweep (``lease_expired``: the worker's lease
ran out during the outage), or the redelivered message finding the claim of a
worker whose lease had expired (``redelivered``). Its own
server (with ``appendfsync always``) so the suite's shared one is never
stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.embedded import EmbeddedServer
from app.models import ActionState, AgentErrorEvent, ConversationStatus, ErrorCause
from app.service import ActionQ
from app.settings import Settings
from tests.events import assert_log_consistent, count_lines, only_error
from tests.helpers import ROOT, WorkerProcess, free_port, wait_for


@pytest.mark.timeout(240)
def test_outcome_lost_to_a_long_outage_errors_the_action_once(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "redis", port=free_port(), appendfsync="always")
    url = server.start()
    env = {
        "PYTHONPATH": str(ROOT),
        "ACTIONQ_REDIS_URL": url,
        "ACTIONQ_TOOL_MODULES": "tests.tools_for_tests",
        "ACTIONQ_WORKDIR": str(tmp_path),
        "ACTIONQ_VISIBILITY_TIMEOUT": "5",
        "ACTIONQ_UNACKED_RESTORE_INTERVAL": "1",
        "ACTIONQ_WORKER_LEASE_SECONDS": "3",
        "ACTIONQ_HEARTBEAT_INTERVAL": "0.5",
    }
    worker = WorkerProcess(
        "outage",
        {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")} | env,
        tmp_path,
    ).start()
    aq = ActionQ(Settings(redis_url=url, tool_modules=["tests.tools_for_tests"]))
    try:
        worker.wait_ready(60)
        marker = tmp_path / "ran.txt"
        cid = aq.create_conversation().id
        action = aq.submit_action(
            cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 1.0}
        )
        wait_for(lambda: count_lines(marker) == 1, 30, what="the tool to start")

        assert server.process is not None
        server.process.kill()  # Redis gone while the tool runs
        server.process.wait(10)
        # The task gives up on recording its outcome after its retries (~35 s).
        wait_for(
            lambda: "StoreUnavailableError" in worker.log() and "raised unexpected" in worker.log(),
            90,
            0.5,
            "the worker to give up on the finish",
        )
        server.start()

        ended = wait_for(
            lambda: (a := aq.get_action(action.id)).state != ActionState.CLAIMED and a,
            60,
            0.2,
            "the claim to be settled",
        )
        assert ended.state == ActionState.ERRORED
        error = only_error(aq, cid, action.id)
        assert isinstance(error, AgentErrorEvent)
        lost = (ErrorCause.ABANDONED, ErrorCause.LEASE_EXPIRED, ErrorCause.REDELIVERED)
        assert error.detail.cause in lost, error.detail
        assert aq.get_conversation(cid).status == ConversationStatus.ERROR
        assert count_lines(marker) == 1  # never run again, not even by a redelivery
        assert_log_consistent(aq, cid)

        # The worker came through the outage: after resume, the next action runs.
        aq.resume(cid)
        after = aq.submit_action(cid, "terminal", {"command": "echo back"})
        assert aq.wait_for_action(after.id, 60).state == ActionState.DONE
        assert count_lines(marker) == 1
    finally:
        aq.close()
        worker.stop(timeout=10)
        server.stop()
