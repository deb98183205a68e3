"""``actionq demo``: the whole story in a few seconds, offline, on an
embedded server, with a scripted agent (no model, no network):

1. the agent runs a command that leaks memory;
2. the command dies (its memory cap, or where the machine gives no cgroup,
   it kills its worker process as the OOM killer would);
3. the conversation goes to ``error`` with an ``AgentErrorEvent`` for that
   call, which is not run again;
4. the user says "try another way" and runs it: the agent reads the crash
   as that call's result, picks another command, and the run is
   ``finished``. The leaking command ran once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from actionq.agent.spec import AgentSpec, ScriptedCall, ScriptedTurn
from actionq.local.embedded import EmbeddedServer
from actionq.local.processes import worker_command
from actionq.local.up import make_console
from actionq.models import (
    ActionEvent,
    AgentErrorEvent,
    ConversationStatus,
    Event,
    MessageEvent,
    ObservationEvent,
)
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.tools import conversation_workspace
from actionq.tools.sandbox import command_memory_cap_available

__all__ = ["run_demo"]

MEMORY_CAP_MB = 200
# Allocates 16 MiB at a time until something stops it; writes a line first,
# so the demo can count how many times it really ran.
LEAK = (
    "echo ran >> leak.log; python3 -c \"exec('x = []\\nwhile True: x.append(bytearray(1 << 24))')\""
)
# Without a cgroup the cap is an address-space limit (the leak gets a
# MemoryError, an ordinary failure): the worker process dies instead, as the
# kernel's OOM killer would kill it.
LEAK_WITHOUT_CGROUP = "echo ran >> leak.log; python3 -c 'x = bytearray(64 << 20)'; kill -9 $PPID"
STREAMING = "seq 1 500000 > big.log; wc -l < big.log"


def _agent(leak: str) -> AgentSpec:
    return AgentSpec(
        kind="scripted",
        turns=[
            ScriptedTurn(
                text="I'll load the whole log into memory and count it.",
                tool_calls=[ScriptedCall(tool="terminal", arguments={"command": leak})],
            ),
            ScriptedTurn(
                text="That call crashed ({last_result}). I won't run it again; "
                "counting by streaming instead.",
                tool_calls=[ScriptedCall(tool="terminal", arguments={"command": STREAMING})],
            ),
            ScriptedTurn(
                tool_calls=[
                    ScriptedCall(
                        tool="finish", arguments={"message": "500000 lines, counted by streaming"}
                    )
                ]
            ),
        ],
    )


@contextmanager
def _worker(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[None]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _summary(event: Event) -> str:
    if isinstance(event, ObservationEvent):
        if "exit_code" not in event.observation:
            return str(event.observation)[:90]
        output = str(event.observation.get("output", "")).strip()
        return f"exit {event.observation.get('exit_code')}: {output[:60]!r}"
    if isinstance(event, AgentErrorEvent):
        d = event.detail
        # Only what is known: a crash without a signal shows no "signal=None".
        shown = {
            "signal": d.signal,
            "exitcode": d.exitcode,
            "max_rss_mb": d.max_rss_bytes // 2**20 if d.max_rss_bytes else None,
            "killed_by": getattr(d, "killed_by", None),
            "pid": d.pid,
        }
        known = " ".join(f"{name}={value}" for name, value in shown.items() if value is not None)
        return f"cause={d.cause.value} {known}".rstrip()
    if isinstance(event, ActionEvent):
        return f"{event.tool_name}: {event.action.get('command', event.action)}"[:90]
    if isinstance(event, MessageEvent):
        return f"{event.source}: {event.llm_message.content}"[:90]
    return str(getattr(event, "value", ""))


def _wait(aq: ActionQ, cid: str, *statuses: ConversationStatus, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while aq.get_conversation(cid).status not in statuses:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the demo conversation did not reach {', '.join(s.value for s in statuses)}; "
                "see the worker logs in the data folder"
            )
        time.sleep(0.1)


def _wait_workers(aq: ActionQ, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while aq.live_worker_count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the demo workers did not start; see the logs in the data folder")
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
    server = EmbeddedServer(base / "data")
    url = server.start()
    console.print(
        f"[bold]actionq demo[/] - embedded server on 127.0.0.1:{server.port}, data in {base}"
    )
    spool = base / "output-spool"  # inside `base`: removed with it
    settings = Settings(redis_url=url, workdir=str(workdir), output_spool_dir=str(spool))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env |= {
        "ACTIONQ_REDIS_URL": url,
        "ACTIONQ_WORKDIR": str(workdir),
        "ACTIONQ_OUTPUT_SPOOL_DIR": str(spool),
        "ACTIONQ_ACTION_MEMORY_LIMIT_MB": str(MEMORY_CAP_MB),
        "ACTIONQ_TOOL_CGROUPS": "true" if settings.tool_cgroups else "false",
    }
    capped = settings.tool_cgroups and command_memory_cap_available()
    ok = True
    try:
        with ActionQ(settings) as aq, ExitStack() as workers:
            workers.enter_context(_worker(worker_command(1, "demo@%h"), env, base / "worker.log"))
            agent_command = worker_command(2, "demo-agent@%h", agent=True)
            workers.enter_context(_worker(agent_command, env, base / "agent-worker.log"))
            _wait_workers(aq, 2)
            console.print(
                "workers started: tool calls on a prefork pool, agent steps on threads; "
                "every tool call and every agent step is a Celery task\n"
            )
            conversation = aq.create_conversation(
                agent=_agent(LEAK if capped else LEAK_WITHOUT_CGROUP)
            )
            cid = conversation.id
            how = (
                f"it dies at its {MEMORY_CAP_MB} MiB cap"
                if capped
                else "no cgroup here: it kills its worker process, as the OOM killer would"
            )
            console.print(
                f"[cyan]>[/] user: How many lines does the big log have?  [dim]({how})[/]"
            )
            aq.send_message(cid, "How many lines does the big log have?", run=True)
            _wait(aq, cid, ConversationStatus.ERROR, ConversationStatus.FINISHED)
            crashed = [e for e in aq.all_events(cid) if isinstance(e, AgentErrorEvent)]
            status = aq.get_conversation(cid).status
            cause = crashed[0].detail.cause.value if crashed else "no crash"
            console.print(
                f"  -> conversation [bold red]{status.value}[/]; {cause}: the call is not re-run"
            )
            ok &= status == ConversationStatus.ERROR and len(crashed) == 1

            console.print("[cyan]>[/] user: Try another way.  [dim](message + run)[/]")
            aq.send_message(cid, "Try another way.", run=True)
            _wait(aq, cid, ConversationStatus.FINISHED, ConversationStatus.ERROR)
            events = aq.all_events(cid)
            second = [e for e in events if isinstance(e, ActionEvent)][1:2]
            read_the_crash = bool(second) and "crashed" in second[0].thought
            marker = conversation_workspace(settings, cid) / "leak.log"
            leak_runs = len(marker.read_text().splitlines()) if marker.exists() else 0
            final = aq.get_conversation(cid).status
            ok &= final == ConversationStatus.FINISHED and read_the_crash and leak_runs == 1

            table = Table(title=f"conversation {cid}")
            for column in ("seq", "event", "detail"):
                table.add_column(column)
            for event in events:
                style = "red" if isinstance(event, AgentErrorEvent) else ""
                table.add_row(str(event.seq), event.kind, _summary(event), style=style)
            console.print(table)
            if second:
                console.print(f"the agent's next thought: [italic]{second[0].thought}[/]")
            console.print(
                f"final status: [bold]{final.value}[/]; the leaking command ran {leak_runs}x"
            )
    finally:
        server.stop()
    console.print("[green]demo passed[/]" if ok else "[red]demo did not behave as expected[/]")
    return bool(ok)
