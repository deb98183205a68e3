"""``actionq demo``: the whole story in a few seconds, on an embedded server.

A conversation runs a command, then a command that kills the process running
it (as the OOM killer would). actionq turns the crash into an AgentErrorEvent
and the conversation into ``error`` instead of running it again; a resume then
lets the next action run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from actionq.local.embedded import EmbeddedServer
from actionq.local.processes import worker_command
from actionq.local.up import make_console
from actionq.models import ActionRecord, AgentErrorEvent, Event, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.tools import conversation_workspace

__all__ = ["run_demo"]


@contextmanager
def _worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            worker_command(1, "demo@%h"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _summary(event: Event) -> str:
    if isinstance(event, ObservationEvent):
        return f"exit {event.observation.get('exit_code')}: {event.observation.get('output', '')!r}"
    if isinstance(event, AgentErrorEvent):
        d = event.detail
        # Only what is known: a crash without a signal shows no "signal=None".
        shown = {"signal": d.signal, "exitcode": d.exitcode, "attempt": d.attempt, "pid": d.pid}
        known = " ".join(f"{name}={value}" for name, value in shown.items() if value is not None)
        return f"cause={d.cause.value} {known}".rstrip()
    action = getattr(event, "action", None)
    if action is not None:
        return str(action.get("command", action))
    return str(getattr(event, "value", ""))


def _wait_worker(aq: ActionQ, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not aq.live_worker_count():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the demo worker did not start; see worker.log in the data folder")
        time.sleep(0.1)


def run_demo(data_dir: Path | None = None, console: Console | None = None) -> bool:
    """Run the demo; returns True if every step behaved as promised."""
    console = console or make_console()
    base = data_dir or Path(tempfile.mkdtemp(prefix="actionq-demo-"))
    try:
        return _run_demo(base, console)
    finally:
        if data_dir is None:  # a folder we made: leave nothing behind
            shutil.rmtree(base, ignore_errors=True)


def _run_demo(base: Path, console: Console) -> bool:
    workdir = base / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedServer(base / "data")
    url = server.start()
    console.print(
        f"[bold]actionq demo[/] - embedded server on 127.0.0.1:{server.port}, data in {base}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env |= {"ACTIONQ_REDIS_URL": url, "ACTIONQ_WORKDIR": str(workdir)}
    settings = Settings(redis_url=url, workdir=str(workdir))
    aq = ActionQ(settings)
    ok = True
    try:
        with _worker(env, base / "worker.log") as process:
            _wait_worker(aq, process)
            console.print("worker started (prefork pool, acks_late, one Celery task per action)\n")
            conversation = aq.create_conversation()

            def step(title: str, command: str) -> ActionRecord:
                console.print(f"[cyan]>[/] {title}: [dim]{command}[/]")
                action = aq.submit_action(conversation.id, "terminal", {"command": command})
                return aq.wait_for_action(action.id, timeout=30)

            first = step("1. a normal command", "echo hello")
            ok &= first.terminal_kind == "ObservationEvent"

            # The command's relative path: in the conversation's own workspace.
            marker = conversation_workspace(settings, conversation.id) / "side-effect.log"
            crash = step(
                "2. a command that kills its own worker process (like the OOM killer)",
                "echo side-effect >> side-effect.log; kill -9 $PPID",
            )
            status = aq.get_conversation(conversation.id).status
            lines = len(marker.read_text().splitlines()) if marker.exists() else 0
            console.print(
                f"  -> action {crash.state.value}, conversation [bold red]{status.value}[/], "
                f"side effect written {lines}x, attempts {crash.attempt} (not re-run)"
            )
            ok &= crash.terminal_kind == "AgentErrorEvent" and status == "error" and lines == 1

            aq.resume(conversation.id)
            console.print("[cyan]>[/] 3. resume (the crash stays in history; nothing is re-run)")
            last = step("4. the next action", "echo recovered")
            ok &= last.terminal_kind == "ObservationEvent"

            table = Table(title=f"conversation {conversation.id}")
            for column in ("seq", "event", "detail"):
                table.add_column(column)
            for event in aq.all_events(conversation.id):
                style = "red" if isinstance(event, AgentErrorEvent) else ""
                table.add_row(str(event.seq), event.kind, _summary(event), style=style)
            console.print(table)
            final = aq.get_conversation(conversation.id).status
            console.print(f"final status: [bold]{final.value}[/]")
    finally:
        server.stop()
    console.print("[green]demo passed[/]" if ok else "[red]demo did not behave as expected[/]")
    return bool(ok)
