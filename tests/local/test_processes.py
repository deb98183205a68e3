"""actionq.local.processes: stopping a child, on real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from actionq.local.processes import child_preexec, free_port, stop_process
from tests.helpers import wait_for
from tests.up_process import is_running

# Ignores SIGTERM, starts a grandchild in its own process group, says ready.
IGNORES_SIGTERM = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen(['sleep', '600'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _start(new_session: bool) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM],
        stdout=subprocess.PIPE,
        start_new_session=new_session,
    )
    assert process.stdout is not None
    with process.stdout:
        return process, int(process.stdout.readline())


def test_an_exited_process_is_not_signalled_and_gives_its_code() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(10)
    assert stop_process(process, 1) == 3


def test_a_process_that_ignores_the_signal_is_killed_after_the_timeout() -> None:
    process, grandchild = _start(new_session=False)
    try:
        assert stop_process(process, 0.5, kill_timeout=10) == -signal.SIGKILL
        assert is_running(grandchild)  # only the process itself was killed
    finally:
        subprocess.run(["kill", "-9", str(grandchild)], check=False)


def test_kill_group_kills_what_the_process_started() -> None:
    process, grandchild = _start(new_session=True)
    try:
        assert stop_process(process, 0.5, kill_group=True, kill_timeout=10) == -signal.SIGKILL
        # The group's SIGKILL was sent; the grandchild (not waited for: not
        # our child) dies when the kernel gets to it, a moment later on a busy machine.
        wait_for(lambda: not is_running(grandchild), 10, what="the grandchild to be killed")
    finally:
        subprocess.run(["kill", "-9", str(grandchild)], check=False)


def test_the_signal_is_the_callers() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"],
        preexec_fn=child_preexec(),
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    with process.stdout:
        # Signalled while it starts, Python can exit 1 (a KeyboardInterrupt
        # while it imports site): only once it runs is the outcome one thing.
        assert process.stdout.readline() == b"ready\n"
    # Python dies of an unhandled SIGINT by re-raising it.
    assert stop_process(process, 10, signal.SIGINT) == -signal.SIGINT


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
