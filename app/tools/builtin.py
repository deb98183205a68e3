"""Built-in tools: terminal, file_read, file_write, finish."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.tools.output import read_bounded, truncate_text
from app.tools.registry import ToolContext, tool

__all__ = ["FileReadArgs", "FileWriteArgs", "FinishArgs", "TerminalArgs"]

TIMEOUT_EXIT_CODE = 124  # what coreutils' `timeout` returns


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TerminalArgs(_Args):
    command: str = Field(min_length=1, max_length=100_000, description="A bash command line.")
    timeout: float = Field(120.0, gt=0, le=86_400, description="Seconds before it is killed.")


class FileReadArgs(_Args):
    path: str = Field(min_length=1, description="Path relative to the working directory.")
    max_bytes: int = Field(64 * 1024, gt=0, le=16 * 1024 * 1024)


class FileWriteArgs(_Args):
    path: str = Field(min_length=1, description="Path relative to the working directory.")
    content: str
    append: bool = False


class FinishArgs(_Args):
    message: str = ""


_PR_SET_PDEATHSIG = 1


def _prepare_subprocess(limit_mb: int) -> Callable[[], None]:
    """Runs in the forked subprocess before exec: cap its memory, and have the
    kernel kill it if the worker process running the action dies (so a
    crashed or cancelled action leaves no orphaned command behind)."""
    limit = limit_mb * 1024 * 1024
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

    def apply() -> None:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return apply


@tool("terminal", TerminalArgs)
def run_terminal(args: TerminalArgs, ctx: ToolContext) -> dict[str, Any]:
    """Run a bash command; returns its exit code and (capped) combined output."""
    shell = shutil.which("bash") or "/bin/sh"
    started = time.monotonic()
    proc = subprocess.Popen(
        [shell, "-c", args.command],
        cwd=ctx.workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a timeout kills all of it
        preexec_fn=_prepare_subprocess(ctx.memory_limit_mb),
    )
    ctx.register_process_group(proc.pid)  # its own session: pgid == pid
    assert proc.stdout is not None
    try:
        output, timed_out = read_bounded(proc.stdout, ctx.max_output_bytes, started + args.timeout)
    finally:
        proc.stdout.close()
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    exit_code = proc.wait()
    if timed_out:
        exit_code = TIMEOUT_EXIT_CODE
    return {
        "exit_code": exit_code,
        "output": output.text(),
        "truncated": output.truncated,
        "timed_out": timed_out,
        "duration_s": round(time.monotonic() - started, 3),
    }


def resolve_in_workdir(workdir: Path, path: str) -> Path:
    """The path inside the working directory; refuses anything that escapes it."""
    root = workdir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise PermissionError(f"path {path!r} is outside the working directory")
    return target


@tool("file_read", FileReadArgs)
def run_file_read(args: FileReadArgs, ctx: ToolContext) -> dict[str, Any]:
    """Read a text file from the working directory."""
    target = resolve_in_workdir(ctx.workdir, args.path)
    with target.open("rb") as f:
        data = f.read(args.max_bytes + 1)
    text = data[: args.max_bytes].decode("utf-8", "replace")
    text, cut = truncate_text(text, ctx.max_output_bytes)
    return {"path": args.path, "content": text, "truncated": cut or len(data) > args.max_bytes}


@tool("file_write", FileWriteArgs)
def run_file_write(args: FileWriteArgs, ctx: ToolContext) -> dict[str, Any]:
    """Write (or append to) a text file in the working directory."""
    target = resolve_in_workdir(ctx.workdir, args.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a" if args.append else "w", encoding="utf-8") as f:
        f.write(args.content)
    return {"path": args.path, "bytes_written": len(args.content.encode("utf-8"))}


@tool("finish", FinishArgs)
def run_finish(args: FinishArgs, ctx: ToolContext) -> dict[str, Any]:
    """Declare the task done, with a final message."""
    return {"message": args.message}
