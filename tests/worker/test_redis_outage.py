"""The Redis server (state store and Celery broker at once; in one test the
store alone) SIGKILLed while a tool runs, and started again on the same port
and data.

The worker's main process must come through any outage, short or long: the
same process (same pid) runs the next action once Redis is back. The action
that was running ends with exactly one outcome:

- a short outage (Redis back within ``ACTIONQ_OUTCOME_RETRY_SECONDS``): its
  ``ObservationEvent``, recorded by the task's retries;
- a longer one: the task gives up recording it and the worker's claim audit
  errors the action once Redis is back (``abandoned``). The worker renews its
  lease before it sweeps, so it never declares itself dead; the tests run one
  worker and no sweeper, so no one else can see its lapsed lease first
  (``lease_expired``, see docs/reliability.md).

Both with actionq's transport and with kombu's own (``ACTIONQ_BROKER_TRANSPORT=redis``).
Each test has its own server (append-only file, ``appendfsync always``), so
the suite's shared one is never stopped. Two pool processes: with a free one,
the consumer is waiting in BRPOP when the server dies, which is the state in
which kombu's teardown used to leave a channel open (see app/messaging/transport.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actionq.local.embedded import EmbeddedServer
from actionq.models import (
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    ObservationEvent,
)
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.events import assert_log_consistent, count_lines, only_error, terminal_events
from tests.helpers import ROOT, WorkerProcess, free_port, wait_for

# actionq's transport (the default for redis://), and kombu's own.
TRANSPORTS = {"actionq": None, "kombu": "redis"}


@dataclass
class Stack:
    server: EmbeddedServer
    worker: WorkerProcess
    aq: ActionQ
    tmp_path: Path

    def kill_server(self) -> None:
        assert self.server.process is not None
        self.server.process.kill()
        self.server.process.wait(10)

    def worker_id(self) -> str:
        prefix = "outage@"
        return wait_for(
            lambda: next((w for w in self.aq.store.live_worker_ids() if w.startswith(prefix)), ""),
            30,
            0.1,
            "the worker's lease",
        )

    def restart_server_and_get_the_error(
        self, cid: str, action_id: str, marker: Path, until: tuple[str, ...], what: str
    ) -> AgentErrorEvent:
        """With the server down: once the worker's log shows one of ``until``,
        start the server again and wait for the action's claim to be settled
        as one error; the conversation is in ``error`` and the tool ran once."""
        wait_for(lambda: any(line in self.worker.log() for line in until), 60, 0.2, what)
        self.server.start()
        ended = wait_for(
            lambda: (a := self.aq.get_action(action_id)).state != ActionState.CLAIMED and a,
            60,
            0.2,
            "the claim to be settled",
        )
        assert ended.state == ActionState.ERRORED
        error = only_error(self.aq, cid, action_id)
        assert isinstance(error, AgentErrorEvent)
        assert self.aq.get_conversation(cid).status == ConversationStatus.ERROR
        assert count_lines(marker) == 1  # never run again, not even by a redelivery
        assert_log_consistent(self.aq, cid)
        return error

    def assert_same_worker_runs_the_next_action(self, cid: str, pid: int) -> None:
        """The worker's main process lived through the outage and works again:
        its lease is renewed, and its pool runs the next action."""
        assert self.worker.is_alive() and self.worker.pid == pid
        log = self.worker.log()
        assert "CRITICAL" not in log and "Unrecoverable error" not in log, log[-3000:]
        store = self.aq.store
        worker_id = self.worker_id()
        renewed = store.lease_expiry(worker_id) or 0.0
        wait_for(
            lambda: (store.lease_expiry(worker_id) or 0.0) > renewed + 1.0,
            10,
            0.1,
            "the lease to be renewed after the outage",
        )
        pid_file = self.tmp_path / "worker-pid.txt"
        after = self.aq.submit_action(cid, "mark_worker_pid", {"marker_file": str(pid_file)})
        assert self.aq.wait_for_action(after.id, 60).state == ActionState.DONE
        assert pid_file.read_text().split() == [str(pid)]
        # And a crash is still noticed and reported (the bootstep's SIGCHLD
        # reader and timers were registered again with the new connection).
        crash = self.aq.submit_action(
            cid, "kill_own_process", {"marker_file": str(self.tmp_path / "crash.txt")}
        )
        ended = wait_for(
            lambda: (a := self.aq.get_action(crash.id)).state == ActionState.ERRORED and a,
            30,
            0.1,
            "the crash after the outage to be reported",
        )
        assert ended.state == ActionState.ERRORED
        assert only_error(self.aq, cid, crash.id).detail.cause == ErrorCause.WORKER_LOST
        assert self.worker.is_alive() and self.worker.pid == pid


@contextlib.contextmanager
def outage_stack(tmp_path: Path, transport: str | None, **settings: str) -> Iterator[Stack]:
    server = EmbeddedServer(tmp_path / "redis", port=free_port(), appendfsync="always")
    url = server.start()
    env = {
        "PYTHONPATH": str(ROOT),
        "ACTIONQ_REDIS_URL": url,
        "ACTIONQ_TOOL_MODULES": "tests.tools_for_tests",
        "ACTIONQ_WORKDIR": str(tmp_path),
    } | {f"ACTIONQ_{name.upper()}": value for name, value in settings.items()}
    if transport is not None:
        env["ACTIONQ_BROKER_TRANSPORT"] = transport
    worker = WorkerProcess(
        "outage",
        {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")} | env,
        tmp_path,
        concurrency=2,
    ).start()
    # The same settings as the worker's (a broker of its own, if given).
    aq = ActionQ(Settings(redis_url=url, tool_modules=["tests.tools_for_tests"], **settings))  # type: ignore[arg-type]
    try:
        worker.wait_ready(60)
        shown = (
            "Connected to redis://"
            if transport == "redis"
            else "Connected to actionq.messaging.transport"
        )
        assert shown in worker.log()
        yield Stack(server, worker, aq, tmp_path)
    finally:
        aq.close()
        worker.stop(timeout=10)
        server.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_a_short_outage_keeps_the_worker_and_the_outcome(
    tmp_path: Path, transport: str | None
) -> None:
    with outage_stack(tmp_path, transport) as stack:
        aq = stack.aq
        pid = stack.worker.pid
        marker = tmp_path / "ran.txt"
        cid = aq.create_conversation().id
        action = aq.submit_action(
            cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 4.0}
        )
        wait_for(lambda: count_lines(marker) == 1, 30, what="the tool to start")

        stack.kill_server()
        time.sleep(2.0)  # the outage itself
        stack.server.start()

        ended = wait_for(
            lambda: (a := aq.get_action(action.id)).state != ActionState.CLAIMED and a,
            60,
            0.2,
            "the action to end",
        )
        assert ended.state == ActionState.DONE, terminal_events(aq, cid, action.id)
        (outcome,) = terminal_events(aq, cid, action.id)
        assert isinstance(outcome, ObservationEvent)
        assert outcome.observation["slept"] == 4.0
        assert aq.get_conversation(cid).status == ConversationStatus.IDLE
        assert count_lines(marker) == 1
        assert_log_consistent(aq, cid)

        stack.assert_same_worker_runs_the_next_action(cid, pid)
        assert count_lines(marker) == 1  # never run again


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_an_outage_longer_than_the_outcome_retries_errors_the_action_once(
    tmp_path: Path, transport: str | None
) -> None:
    """The same path as with the default ~35 s of retries, shortened to 3 s.
    A visibility timeout of 5 s makes the broker hand the action's message out
    again after the outage: that delivery must run nothing."""
    with outage_stack(
        tmp_path,
        transport,
        outcome_retry_seconds="3",
        visibility_timeout="5",
        unacked_restore_interval="1",
    ) as stack:
        aq = stack.aq
        pid = stack.worker.pid
        marker = tmp_path / "ran.txt"
        cid = aq.create_conversation().id
        action = aq.submit_action(
            cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 1.0}
        )
        wait_for(lambda: count_lines(marker) == 1, 30, what="the tool to start")

        stack.kill_server()  # Redis gone while the tool runs
        # The task gives up on recording its outcome (its log: the task
        # "raised unexpected: StoreUnavailableError"); by then the worker's
        # 3 s lease has lapsed too.
        error = stack.restart_server_and_get_the_error(
            cid, action.id, marker, ("raised unexpected: StoreUnavailableError",),
            "the worker to give up on the finish",
        )  # fmt: skip
        assert error.detail.cause == ErrorCause.ABANDONED, error.detail

        aq.resume(cid)
        stack.assert_same_worker_runs_the_next_action(cid, pid)
        assert count_lines(marker) == 1


@pytest.mark.timeout(120)
def test_a_cold_shutdown_while_the_sweep_waits_on_redis_says_worker_shutdown(
    tmp_path: Path,
) -> None:
    """Found by the chaos soak on a Cluster (a primary's failover stalled the
    sweep): Celery's SIGQUIT handler cancels the running requests (they leave
    ``active_requests``) and may run in the middle of the worker's periodic
    sweep, before its claim audit reads them. An action claimed more than 5 s
    before must still end as the cold shutdown it was, ``worker_shutdown``
    (docs/reliability.md), not ``abandoned``. Redis is frozen (SIGSTOP) so that
    the sweep waits on it when the signal comes."""
    with outage_stack(tmp_path, None) as stack:
        aq = stack.aq
        marker = tmp_path / "ran.txt"
        cid = aq.create_conversation().id
        action = aq.submit_action(
            cid, "sleep_after_mark", {"marker_file": str(marker), "seconds": 60}
        )
        wait_for(lambda: count_lines(marker) == 1, 30, what="the tool to start")
        time.sleep(6.0)  # past the claim audit's 5 s grace for a fresh claim
        assert stack.server.process is not None and stack.worker.process is not None
        os.kill(stack.server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(2.0)  # the next sweep (every 1 s) is now waiting on Redis
            os.kill(stack.worker.pid, signal.SIGQUIT)  # cold shutdown
            time.sleep(1.0)
        finally:
            os.kill(stack.server.process.pid, signal.SIGCONT)
        stack.worker.process.wait(30)

        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.WORKER_SHUTDOWN, stack.worker.log()[-3000:]
        assert aq.get_conversation(cid).status == ConversationStatus.ERROR
        assert count_lines(marker) == 1
        assert_log_consistent(aq, cid)


@pytest.mark.timeout(180)
def test_a_child_killed_while_the_store_is_away_is_still_worker_lost(
    tmp_path: Path, redis_url: str
) -> None:
    """Found by the chaos soak on a Cluster (a primary's failover): the pool
    child dies while the store is away but the broker is not (with one Redis
    for both, Celery handles the death only once it has reconnected), so
    ``task_failure`` cannot record the crash. The worker keeps it and settles
    it once the store is back as what it was, ``worker_lost`` with signal 9,
    not ``abandoned``, and runs nothing again. The broker is the suite's own
    server (a database of this test's)."""
    with outage_stack(tmp_path, None, broker_url=redis_url) as stack:
        aq = stack.aq
        pid = stack.worker.pid
        marker = tmp_path / "ran.txt"
        go = tmp_path / "go"
        cid = aq.create_conversation().id
        action = aq.submit_action(
            cid, "kill_own_process_when_told", {"marker_file": str(marker), "go_file": str(go)}
        )
        wait_for(lambda: count_lines(marker) == 1, 30, what="the tool to start")

        stack.kill_server()
        go.touch()
        # Only once task_failure has met the missing store (before the fix,
        # its handler then failed).
        met = (f"action {action.id} is settled once", "handler on_task_failure failed")
        error = stack.restart_server_and_get_the_error(
            cid, action.id, marker, met, "task_failure to meet the missing store"
        )
        assert error.detail.cause == ErrorCause.WORKER_LOST, error.detail
        assert error.detail.signal == signal.SIGKILL

        aq.resume(cid)
        stack.assert_same_worker_runs_the_next_action(cid, pid)
        assert count_lines(marker) == 1
