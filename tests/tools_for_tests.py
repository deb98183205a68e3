"""Extra tools for the tests, loaded by workers via ACTIONQ_TOOL_MODULES.

Each side effect is a line appended to a file, so a test can count how many
times an action really ran.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from pydantic import BaseModel

from actionq.tools import ToolContext, tool


class MarkArgs(BaseModel):
    marker_file: str
    line: str = "ran"


class SleepArgs(MarkArgs):
    seconds: float


class RaiseArgs(BaseModel):
    message: str


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@tool("kill_own_process", MarkArgs)
def kill_own_process(args: MarkArgs, ctx: ToolContext) -> dict[str, Any]:
    """Append a line, then SIGKILL the process running the tool (the pool child)."""
    _append(args.marker_file, args.line)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


class ToldArgs(MarkArgs):
    go_file: str


@tool("kill_own_process_when_told", ToldArgs)
def kill_own_process_when_told(args: ToldArgs, ctx: ToolContext) -> dict[str, Any]:
    """Append a line, wait (at most 120 s) until ``go_file`` exists, then
    SIGKILL the process running the tool: the test chooses the moment."""
    _append(args.marker_file, args.line)
    deadline = time.monotonic() + 120
    while not os.path.exists(args.go_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


@tool("sleep_after_mark", SleepArgs)
def sleep_after_mark(args: SleepArgs, ctx: ToolContext) -> dict[str, Any]:
    """Append a line, then sleep (a long action with a side effect at its start)."""
    _append(args.marker_file, args.line)
    time.sleep(args.seconds)
    return {"slept": args.seconds, "line": args.line}


@tool("raise_error", RaiseArgs)
def raise_error(args: RaiseArgs, ctx: ToolContext) -> dict[str, Any]:
    """Raise an ordinary exception."""
    raise RuntimeError(args.message)


class NoArgs(BaseModel):
    pass


@tool("own_environ_names", NoArgs)
def own_environ_names(args: NoArgs, ctx: ToolContext) -> dict[str, Any]:
    """The ACTIONQ_* names in the environment of the process running the tool."""
    return {"names": sorted(k for k in os.environ if k.startswith("ACTIONQ_"))}


@tool("mark_worker_pid", MarkArgs)
def mark_worker_pid(args: MarkArgs, ctx: ToolContext) -> dict[str, Any]:
    """Append the pid of the worker's main process (the pool child's parent)."""
    _append(args.marker_file, str(os.getppid()))
    return {"worker_pid": os.getppid()}


class AllocateArgs(BaseModel):
    mib: int
    step_mib: int = 20
    step_seconds: float = 0.01


@tool("allocate_in_process", AllocateArgs)
def allocate_in_process(args: AllocateArgs, ctx: ToolContext) -> dict[str, Any]:
    """Grow the pool child itself (a leaking Python tool), step by step."""
    held = []
    for _ in range(0, args.mib, args.step_mib):
        held.append(bytearray(args.step_mib * 1024 * 1024))  # zeroed: really resident
        time.sleep(args.step_seconds)
    return {"held_mib": len(held) * args.step_mib}
