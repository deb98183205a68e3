"""Built-in tools: terminal and finish (the file tools: actionq.tools.files)."""

from __future__ import annotations

import logging
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from actionq.tools.output import read_until_exit
from actionq.tools.registry import ToolContext, tool
from actionq.tools.sandbox import (
    CommandCgroup,
    ProcessGroup,
    boot_id,
    die_with_parent_hook,
    kill_process_group,
    process_start_ticks,
)

__all__ = ["FinishArgs", "TerminalArgs"]

TIMEOUT_EXIT_CODE = 124  # what coreutils' `timeout` returns
log = logging.getLogger(__name__)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TerminalArgs(_Args):
    command: str = Field(min_length=1, max_length=100_000, description="A bash command line.")
    timeout: float = Field(120.0, gt=0, le=86_400, description="Seconds before it is killed.")


class FinishArgs(_Args):
    message: str = ""


# After the shell exits, how long its output is still read: a background child
# that holds the pipe open must not keep the action (and the worker) waiting.
_OUTPUT_LINGER_SECONDS = 0.5


def _prepare_subprocess(limit_mb: int, cgroup: CommandCgroup | None) -> Callable[[], None]:
    """Runs in the forked subprocess before exec: join the command's cgroup
    (so all it starts is in it from the first fork), cap its memory, and have
    the kernel kill it if the worker process running the action dies."""
    limit = limit_mb * 1024 * 1024
    die_with_worker = die_with_parent_hook(signal.SIGKILL)

    def apply() -> None:
        if cgroup is not None:
            cgroup.join_in_child()  # raises: Popen fails, nothing ran
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if die_with_worker is not None:
            die_with_worker()

    return apply


@tool("terminal", TerminalArgs, risk="HIGH")
def run_terminal(args: TerminalArgs, ctx: ToolContext) -> dict[str, Any]:
    """Run a bash command; returns its exit code and (capped) combined output."""
    shell = shutil.which("bash", path=ctx.env.get("PATH")) or "/bin/sh"
    started = time.monotonic()
    cgroup = CommandCgroup.create(f"actionq-{ctx.action_id}") if ctx.use_cgroups else None

    def start(cgroup: CommandCgroup | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [shell, "-c", args.command],
            cwd=ctx.workdir,
            env=dict(ctx.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: pgid == pid
            preexec_fn=_prepare_subprocess(ctx.memory_limit_mb, cgroup),
        )

    if cgroup is not None:
        # Recorded before the command can start anything: a crash right after
        # the start still finds all of it.
        ctx.register_process_group(ProcessGroup(None, None, boot_id(), str(cgroup.path)))
    try:
        proc = start(cgroup)
    except subprocess.SubprocessError:
        if cgroup is None:
            raise
        # It could not join the cgroup (before exec: nothing ran): without it.
        log.warning("cannot move commands into cgroup %s; using process groups", cgroup.path)
        cgroup.remove()
        cgroup = None
        proc = start(None)
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        raise
    assert proc.stdout is not None
    try:
        ctx.register_process_group(
            ProcessGroup(
                pgid=proc.pid,
                start_ticks=process_start_ticks(proc.pid),
                boot_id=boot_id(),
                cgroup=str(cgroup.path) if cgroup is not None else None,
            )
        )
        output, timed_out = read_until_exit(
            proc.stdout,
            ctx.max_output_bytes,
            started + args.timeout,
            proc.pid,
            _OUTPUT_LINGER_SECONDS,
        )
    finally:
        # Nothing it started outlives it. The shell is not reaped yet, so its
        # pid (= the group id) cannot have been reused.
        if cgroup is not None:
            cgroup.kill()
        kill_process_group(proc.pid)
        proc.stdout.close()
        exit_code = proc.wait()
        if cgroup is not None:
            cgroup.remove()
    if timed_out:
        exit_code = TIMEOUT_EXIT_CODE
    return {
        "exit_code": exit_code,
        "output": output.text(),
        "truncated": output.truncated,
        "timed_out": timed_out,
        "duration_s": round(time.monotonic() - started, 3),
    }


@tool("finish", FinishArgs, risk="LOW")
def run_finish(args: FinishArgs, ctx: ToolContext) -> dict[str, Any]:
    """Declare the task done, with a final message."""
    return {"message": args.message}
