"""The chaos harness's tool: each run appends its action id to a side-effect
log first, so the log shows exactly which actions ran and how often."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Literal

from pydantic import BaseModel

from actionq.tools import ToolContext, tool


class StepArgs(BaseModel):
    log: str
    seconds: float = 0.1
    then: Literal["return", "crash", "raise"] = "return"


@tool("chaos_step", StepArgs)
def chaos_step(args: StepArgs, ctx: ToolContext) -> dict[str, Any]:
    """Record that this action ran, work for a while, then end as scripted."""
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.action_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    time.sleep(args.seconds)
    if args.then == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if args.then == "raise":
        raise RuntimeError("scripted failure")
    return {"action_id": ctx.action_id, "slept": args.seconds}
