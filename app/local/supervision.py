"""Keeping ``actionq up``'s children alive: a thread that notices a dead
child, says so in one line and starts it again, waiting longer after each
death in quick succession (back-off), so a child that cannot start does not
spin."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from rich.console import Console

__all__ = ["SupervisedChild", "Supervisor", "describe_exit"]

FIRST_DELAY = 0.5  # seconds before the first restart
MAX_DELAY = 30.0
STABLE_AFTER = 30.0  # a child that ran this long starts again at FIRST_DELAY
POLL_INTERVAL = 0.2


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class SupervisedChild:
    """One child process: how to start it, and its current process."""

    def __init__(
        self,
        name: str,
        start: Callable[[], subprocess.Popen[bytes]],
        console: Console,
        kill_group_on_death: bool = False,
    ) -> None:
        self.name = name
        self._start = start
        self.console = console
        # A dead worker's pool children are orphans in its process group
        # (its pid is the group id: it was started in a new session).
        self.kill_group_on_death = kill_group_on_death
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = FIRST_DELAY
        self.restart_at: float | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.process = self._start()
        self.started_at = time.monotonic()
        return self.process

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        """Supervise a process started elsewhere."""
        self.process = process
        self.started_at = time.monotonic()

    def check(self, now: float) -> None:
        """Notice a death, or restart when its back-off delay has passed."""
        if self.restart_at is None:
            process = self.process
            if process is None or process.poll() is None:
                return
            if self.kill_group_on_death:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            quick = now - self.started_at < STABLE_AFTER
            self.delay = min(self.delay * 2, MAX_DELAY) if quick else FIRST_DELAY
            self.console.print(
                f"actionq up: the {self.name} (pid {process.pid}) died "
                f"({describe_exit(process.returncode)}); restarting it in {self.delay:g}s"
            )
            self.restart_at = now + self.delay
            return
        if now < self.restart_at:
            return
        try:
            process = self.start()
        except Exception as e:  # whatever stopped it starting: try again later
            self.delay = min(self.delay * 2, MAX_DELAY)
            self.restart_at = time.monotonic() + self.delay
            self.console.print(
                f"actionq up: the {self.name} did not start ({e}); trying again in {self.delay:g}s"
            )
            return
        self.restart_at = None
        self.console.print(f"actionq up: the {self.name} restarted (pid {process.pid})")


class Supervisor:
    """A daemon thread checking its children every POLL_INTERVAL seconds."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.children: list[SupervisedChild] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actionq-up-supervisor", daemon=True)

    def add(self, child: SupervisedChild) -> None:
        self.children.append(child)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting anything (before the children are stopped on purpose)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def _run(self) -> None:
        while not self._stopping.wait(POLL_INTERVAL):
            for child in self.children:
                if self._stopping.is_set():
                    return
                child.check(time.monotonic())
