"""Built-in tools: terminal, file_read, file_write, finish."""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from actionq.tools.output import read_until_exit, truncate_text
from actionq.tools.registry import ToolContext, tool
from actionq.tools.sandbox import (
    CommandCgroup,
    ProcessGroup,
    boot_id,
    die_with_parent_hook,
    kill_process_group,
    process_start_ticks,
)

__all__ = ["FileReadArgs", "FileWriteArgs", "FinishArgs", "TerminalArgs"]

TIMEOUT_EXIT_CODE = 124  # what coreutils' `timeout` returns
T = TypeVar("T")
log = logging.getLogger(__name__)


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


def resolve_in_workdir(workdir: Path, path: str, protected: tuple[Path, ...] = ()) -> Path:
    """The path inside the working directory; refuses anything that escapes it,
    and anything in a protected folder (unless the working directory itself
    lies inside that folder, and the path inside the working directory)."""
    root = workdir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise PermissionError(f"path {path!r} is outside the working directory")
    for folder in protected:
        folder = folder.resolve()
        workdir_inside = root != folder and root.is_relative_to(folder)
        if target.is_relative_to(folder) and not workdir_inside:
            raise PermissionError(
                f"path {path!r} is in actionq's data folder; tools may not use it"
            )
    return target


def _open_regular(target: Path, path: str, flags: int) -> int:
    """Open without blocking (a FIFO would) and without following a symlink
    swapped in since the path was resolved; refuse anything but a regular
    file, judged on the open descriptor itself (no check-then-use race)."""
    try:
        fd = os.open(target, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ELOOP):  # a FIFO without reader; a symlink
            raise PermissionError(f"path {path!r} is not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PermissionError(f"path {path!r} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _within(timeout: float, what: str, work: Callable[[], T]) -> T:
    """Run ``work`` with a deadline: storage that hangs (a dead network mount)
    errors the action instead of holding the worker until the hard limit (the
    stuck thread is left behind; it holds nothing the next action needs)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=run, name="actionq-file-tool", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} took longer than {timeout:g}s")
    if failure:
        raise failure[0]
    return result[0]


@tool("file_read", FileReadArgs, risk="LOW")
def run_file_read(args: FileReadArgs, ctx: ToolContext) -> dict[str, Any]:
    """Read a text file from the working directory."""
    target = resolve_in_workdir(ctx.workdir, args.path, ctx.protected_paths)

    def read() -> bytes:
        fd = _open_regular(target, args.path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return f.read(args.max_bytes + 1)

    data = _within(ctx.file_timeout, f"reading {args.path!r}", read)
    text = data[: args.max_bytes].decode("utf-8", "replace")
    text, cut = truncate_text(text, ctx.max_output_bytes)
    return {"path": args.path, "content": text, "truncated": cut or len(data) > args.max_bytes}


@tool("file_write", FileWriteArgs, risk="MEDIUM")
def run_file_write(args: FileWriteArgs, ctx: ToolContext) -> dict[str, Any]:
    """Write (or append to) a text file in the working directory."""
    target = resolve_in_workdir(ctx.workdir, args.path, ctx.protected_paths)
    data = args.content.encode("utf-8")

    def write() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if args.append else 0)
        fd = _open_regular(target, args.path, flags)
        with os.fdopen(fd, "wb") as f:
            if not args.append:
                f.truncate(0)  # only now that it is known to be a regular file
            f.write(data)

    _within(ctx.file_timeout, f"writing {args.path!r}", write)
    return {"path": args.path, "bytes_written": len(data)}


@tool("finish", FinishArgs, risk="LOW")
def run_finish(args: FinishArgs, ctx: ToolContext) -> dict[str, Any]:
    """Declare the task done, with a final message."""
    return {"message": args.message}
