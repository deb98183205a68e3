"""A crashed terminal command's last output, in its AgentErrorEvent: real
prefork workers, really SIGKILLed (by the command itself, or the whole worker)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actionq.agent.view import result_text
from actionq.api.openhands.events import envelope, sdk_event
from actionq.crashes.causes import OUTPUT_TAIL_HEADING
from actionq.models import ConversationStatus, ErrorCause, ObservationEvent
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import only_error, terminal_events
from tests.helpers import ROOT, wait_for


def wait_status(aq: ActionQ, cid: str, status: ConversationStatus, timeout: float = 30) -> None:
    wait_for(lambda: aq.get_conversation(cid).status == status, timeout, what=f"status {status}")


def spool_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def test_output_printed_right_before_the_command_kills_its_reader_is_kept(
    aq: ActionQ, start_worker: WorkerFactory, spool: Path
) -> None:
    worker = start_worker(ACTIONQ_OUTPUT_SPOOL_DIR=str(spool))
    # Several times: the output must be kept every time, not by a lucky race.
    for _ in range(5):
        cid = aq.create_conversation().id
        command = "printf 'line-1\\nbefore-crash\\n'; kill -9 $PPID"
        action = aq.submit_action(cid, "terminal", {"command": command})
        wait_status(aq, cid, ConversationStatus.ERROR)
        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.WORKER_LOST
        assert error.detail.output_tail == "line-1\nbefore-crash\n"
        # What the model reads as the call's result, and what an OpenHands client shows.
        assert f"{OUTPUT_TAIL_HEADING}\n-----\nline-1\nbefore-crash\n-----" in result_text(error)
        projected = sdk_event(error)["error"]
        assert "line-1\nbefore-crash\n" in projected
        assert projected.rsplit(" [cause: ", 1)[1].startswith("worker_lost, signal 9")
        assert envelope(error)["detail"]["output_tail"] == "line-1\nbefore-crash\n"
        # The crash handler deletes the spool once the event is written.
        wait_for(lambda: spool_files(spool) == [], 10, what="the spool to be deleted")
        assert aq.store.output_tail(cid, action.id) is None
    assert worker.is_alive()


def test_the_tail_is_the_last_bytes_of_a_long_output(
    aq: ActionQ, start_worker: WorkerFactory, spool: Path
) -> None:
    start_worker(ACTIONQ_OUTPUT_SPOOL_DIR=str(spool), ACTIONQ_OUTPUT_TAIL_BYTES="1000")
    cid = aq.create_conversation().id
    everything = subprocess.run(["seq", "1", "20000"], capture_output=True, check=True).stdout
    assert len(everything) > 100_000
    action = aq.submit_action(cid, "terminal", {"command": "seq 1 20000; kill -9 $PPID"})
    wait_status(aq, cid, ConversationStatus.ERROR)
    tail = only_error(aq, cid, action.id).detail.output_tail
    assert tail == everything[-1000:].decode()


def test_a_normal_command_leaves_no_spool_and_its_output_is_unchanged(
    aq: ActionQ, start_worker: WorkerFactory, spool: Path
) -> None:
    start_worker(ACTIONQ_OUTPUT_SPOOL_DIR=str(spool))
    cid = aq.create_conversation().id
    command = "echo out; echo err >&2; seq 1 3"
    action = aq.submit_action(cid, "terminal", {"command": command})
    aq.wait_for_action(action.id, 30)
    [result] = terminal_events(aq, cid, action.id)
    assert isinstance(result, ObservationEvent)
    assert result.observation["output"] == "out\nerr\n1\n2\n3\n"
    assert result.observation["exit_code"] == 0
    assert spool_files(spool) == []
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert aq.store.output_tail(cid, action.id) is None


@pytest.fixture(params=["same_host", "other_host"])
def sweeper(
    request: pytest.FixtureRequest, settings_env: dict[str, str], tmp_path: Path, spool: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A standalone ``actionq sweeper``: on the dead worker's host (it reads the
    spool), or standing for one on another host (its spool folder is not the
    dead worker's, so only the Redis copy has the tail)."""
    where = str(request.param)
    folder = spool if where == "same_host" else tmp_path / "other-host-spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env |= settings_env | {"PYTHONPATH": str(ROOT), "ACTIONQ_OUTPUT_SPOOL_DIR": str(folder)}
    with (tmp_path / "sweeper.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "actionq", "sweeper"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield where, process
    process.terminate()
    process.wait(10)


def test_the_sweeper_reports_the_tail_of_a_whole_dead_worker(
    aq: ActionQ,
    start_worker: WorkerFactory,
    sweeper: tuple[str, subprocess.Popen[bytes]],
    spool: Path,
) -> None:
    worker = start_worker("doomed", ACTIONQ_OUTPUT_SPOOL_DIR=str(spool))
    cid = aq.create_conversation().id
    action = aq.submit_action(cid, "terminal", {"command": "echo marker-before-death; sleep 60"})
    spooled = spool / f"{action.id}.out"
    wait_for(lambda: spooled.exists() and b"marker" in spooled.read_bytes(), 20, what="output")
    assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
    # The Redis copy lags by at most the publish interval (0.5 s).
    wait_for(lambda: aq.store.output_tail(cid, action.id), 5, what="the Redis copy")
    worker.kill_everything()  # parent and children, as when a node dies

    wait_status(aq, cid, ConversationStatus.ERROR, timeout=20)
    error = only_error(aq, cid, action.id)
    assert error.detail.cause == ErrorCause.LEASE_EXPIRED
    assert error.detail.output_tail == "marker-before-death\n"
    assert "marker-before-death" in result_text(error)
    assert "marker-before-death" in sdk_event(error)["error"]
    assert aq.store.output_tail(cid, action.id) is None  # the copy goes with the crash
    if sweeper[0] == "same_host":
        # Read, then deleted once the event is written.
        wait_for(lambda: not spooled.exists(), 10, what="the spool to be deleted")
    else:
        assert spooled.exists()  # out of reach from "another host"
