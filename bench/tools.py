"""Tools used only by the benchmarks (loaded with ACTIONQ_TOOL_MODULES=bench.tools)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from pydantic import BaseModel

from actionq.tools import ToolContext, tool


class StampArgs(BaseModel):
    stamp_file: str


class SleepArgs(BaseModel):
    seconds: float
    stamp_file: str | None = None


class NoopArgs(BaseModel):
    pass


def _stamp(path: str) -> None:
    """Append the time: the file's first line is when the body first ran, and
    its number of lines is how many times the body ran."""
    with open(path, "a") as f:
        f.write(f"{time.time()!r}\n")


@tool("crash_now", StampArgs)
def crash_now(args: StampArgs, ctx: ToolContext) -> dict[str, Any]:
    """Append the time (one line per run), then SIGKILL the process running the tool."""
    _stamp(args.stamp_file)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


@tool("sleep", SleepArgs)
def sleep(args: SleepArgs, ctx: ToolContext) -> dict[str, Any]:
    """Note that it started (one line per run), then sleep."""
    if args.stamp_file:
        _stamp(args.stamp_file)
    time.sleep(args.seconds)
    return {}


@tool("noop", NoopArgs)
def noop(args: NoopArgs, ctx: ToolContext) -> dict[str, Any]:
    """Do nothing (for throughput runs)."""
    return {}


class TickArgs(BaseModel):
    n: int


@tool("tick", TickArgs, risk="LOW")
def tick(args: TickArgs, ctx: ToolContext) -> dict[str, Any]:
    """Do nothing; return n (the agent benchmarks: each call differs, so the
    loop's stuck detection, the same call and result 4 times, stays quiet)."""
    return {"n": args.n}
