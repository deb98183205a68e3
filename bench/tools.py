"""Tools used only by the benchmarks (loaded with ACTIONQ_TOOL_MODULES=bench.tools)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from pydantic import BaseModel

from app.tools import ToolContext, tool


class StampArgs(BaseModel):
    stamp_file: str


class SleepArgs(BaseModel):
    seconds: float
    stamp_file: str | None = None


class NoopArgs(BaseModel):
    pass


@tool("crash_now", StampArgs)
def crash_now(args: StampArgs, ctx: ToolContext) -> dict[str, Any]:
    """Write the time, then SIGKILL the process running the tool."""
    with open(args.stamp_file, "w") as f:
        f.write(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


@tool("sleep", SleepArgs)
def sleep(args: SleepArgs, ctx: ToolContext) -> dict[str, Any]:
    """Note that it started, then sleep."""
    if args.stamp_file:
        with open(args.stamp_file, "w") as f:
            f.write(repr(time.time()))
    time.sleep(args.seconds)
    return {}


@tool("noop", NoopArgs)
def noop(args: NoopArgs, ctx: ToolContext) -> dict[str, Any]:
    """Do nothing (for throughput runs)."""
    return {}
