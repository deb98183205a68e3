"""Reading billiard's WorkerLostError message (actionq.tasks.signals.parse_worker_lost):
the signal or exit code that ends up in an AgentErrorEvent's detail."""

from __future__ import annotations

import pytest
from billiard.common import human_status

from actionq.tasks.signals import parse_worker_lost


def billiard_message(exitcode: int | None, job: int) -> str:
    """The message billiard's pool raises when a child dies (billiard/pool.py)."""
    return f"Worker exited prematurely: {human_status(exitcode)} Job: {job}."


def test_billiards_messages_as_they_are_written() -> None:
    assert parse_worker_lost("Worker exited prematurely: signal 9 (SIGKILL) Job: 12.") == (9, None)
    assert parse_worker_lost("Worker exited prematurely: exitcode 1 Job: 3.") == (None, 1)


@pytest.mark.parametrize(
    ("exitcode", "parsed"),
    [
        (-9, (9, None)),  # SIGKILL: the OOM killer, or kill -9
        (-15, (15, None)),
        (-11, (11, None)),  # a segfault
        (-77, (77, None)),  # no name for it: billiard writes "signal 77" alone
        (1, (None, 1)),
        (0, (None, 0)),  # exit code 0 is an exit code, not "none"
        (None, (None, None)),  # billiard writes "exitcode None"
    ],
)
def test_billiards_own_formatting(exitcode: int | None, parsed: tuple[int | None, ...]) -> None:
    assert parse_worker_lost(billiard_message(exitcode, job=12)) == parsed


def test_the_job_number_is_never_read_as_a_signal_or_code() -> None:
    assert parse_worker_lost(billiard_message(-9, job=15)) == (9, None)
    assert parse_worker_lost(billiard_message(2, job=9)) == (None, 2)


@pytest.mark.parametrize("message", ["", "Worker exited prematurely", "signal SIGKILL", "Job: 9."])
def test_a_message_without_either_gives_nothing(message: str) -> None:
    assert parse_worker_lost(message) == (None, None)
