"""Built-in tools: terminal, think and finish (the file tools: actionq.tools.files and
actionq.tools.file_editor). Names, arguments and observation keys are OpenHands'
(TerminalTool, ThinkTool, FinishTool), so an OpenHands client can show them."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from actionq.errors import CommandOutOfMemory
from actionq.tools.registry import ToolContext, tool
from actionq.tools.sandbox import (
    CommandCgroup,
    MemoryCgroup,
    MemoryUsage,
    ProcessGroup,
    boot_id,
    die_with_parent_hook,
    kill_process_group,
    process_group_members,
    process_start_ticks,
)
from actionq.tools.spool import (
    OutputSpool,
    follow_until_exit,
    holds_file,
    spool_folder,
    spool_path,
)

__all__ = ["THINK_OUTPUT", "FinishArgs", "TerminalArgs", "ThinkArgs"]

TIMEOUT_EXIT_CODE = 124  # what coreutils' `timeout` returns
THINK_OUTPUT = "Your thought has been logged."  # OpenHands' ThinkObservation text
log = logging.getLogger(__name__)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TerminalArgs(_Args):
    command: str = Field(min_length=1, max_length=100_000, description="A bash command line.")
    timeout: float = Field(120.0, gt=0, le=86_400, description="Seconds before it is killed.")


class FinishArgs(_Args):
    message: str = ""


class ThinkArgs(_Args):
    thought: str = Field(description="The thought to log.")


# After the shell exits, how long its output is still read: a background child
# that holds the spool open must not keep the action (and the worker) waiting.
_OUTPUT_LINGER_SECONDS = 0.5
# The copy of the output tail in Redis is written at most this often.
TAIL_PUBLISH_SECONDS = 0.5


def _prepare_subprocess(
    limit_mb: int, cgroup: CommandCgroup | None, memory: MemoryCgroup | None
) -> Callable[[], None]:
    """Runs in the forked subprocess before exec: join the command's cgroups
    (so all it starts is in them from the first fork), cap its memory, and
    have the kernel kill it if the worker process running the action dies."""
    limit = limit_mb * 1024 * 1024
    die_with_worker = die_with_parent_hook(signal.SIGKILL)

    def apply() -> None:
        if cgroup is not None:
            cgroup.join_in_child()  # raises: Popen fails, nothing ran
        if memory is not None:
            memory.join_in_child()
        elif limit:
            # The fallback where no cgroup can hold the cap: an address-space
            # limit. It is a poor measure of memory (a JVM, Go or V8 program
            # that reserves address space up front fails at once even if it
            # would use little), which is why a memory cgroup replaces it; but
            # without either, one leaking command could take the machine's
            # memory and get the OOM killer to pick the pool child or another
            # conversation's command. Under it the command sees ENOMEM and
            # fails by itself: an ordinary observation, nothing was killed.
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if die_with_worker is not None:
            die_with_worker()

    return apply


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, int | None]:
    """Wait for the shell; its exit code (negative: killed by that signal) and
    the largest resident size (bytes) of it or any descendant it waited for
    (``ru_maxrss`` from wait4: the peak where no cgroup counts one)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen.wait
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024  # Linux reports KiB


@dataclass
class _CommandGroups:
    """The cgroups of one command: the v2 one that holds all it starts, and the
    one that caps its memory (that same v2 cgroup, or a v1 memory cgroup)."""

    cgroup: CommandCgroup | None
    memory: MemoryCgroup | None

    @classmethod
    def create(cls, ctx: ToolContext) -> _CommandGroups:
        if not ctx.use_cgroups:
            return cls(None, None)
        name = f"actionq-{ctx.action_id}"
        cgroup = CommandCgroup.create(name)
        limit = ctx.memory_limit_mb * 1024 * 1024
        return cls(cgroup, MemoryCgroup.create(name, cgroup, limit) if limit else None)

    def record(self, pgid: int | None = None) -> ProcessGroup:
        v1 = self.memory is not None and self.memory.v1
        return ProcessGroup(
            pgid=pgid,
            start_ticks=process_start_ticks(pgid) if pgid is not None else None,
            boot_id=boot_id(),
            cgroup=str(self.cgroup.path) if self.cgroup is not None else None,
            memory_cgroup=str(self.memory.path) if v1 and self.memory is not None else None,
        )

    def kill(self) -> None:
        for group in (self.cgroup, self.memory):
            if group is not None:
                group.kill()

    def remove(self) -> None:
        for group in (self.memory, self.cgroup):
            if group is not None:
                group.remove()


def _start(
    args: TerminalArgs, ctx: ToolContext, shell: str, groups: _CommandGroups, output_fd: int
) -> tuple[subprocess.Popen[bytes], _CommandGroups]:
    def start(groups: _CommandGroups) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [shell, "-c", args.command],
            cwd=ctx.workdir,
            env=dict(ctx.env),
            stdin=subprocess.DEVNULL,
            # Straight to the spool file: on disk once written, whatever
            # becomes of this process.
            stdout=output_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: pgid == pid
            preexec_fn=_prepare_subprocess(ctx.memory_limit_mb, groups.cgroup, groups.memory),
        )

    try:
        return start(groups), groups
    except subprocess.SubprocessError:
        if groups.cgroup is None and groups.memory is None:
            raise
        # It could not join a cgroup (before exec: nothing ran): without them.
        log.warning("cannot move commands into their cgroups; using process groups")
        groups.remove()
        groups = _CommandGroups(None, None)
        return start(groups), groups
    except BaseException:
        groups.remove()
        raise


class _TailPublisher:
    """Keeps the last ``size`` bytes of the output and copies them to Redis
    (for a sweeper on another host) once the command has run
    ``TAIL_PUBLISH_SECONDS``, then at most that often: a quick command costs
    no round trip, and the copy lags the output by at most that long."""

    def __init__(self, size: int, publish: Callable[[bytes], None]) -> None:
        self.size = size
        self.publish = publish
        self.tail = bytearray()
        self.published_at = time.monotonic()  # the first copy waits one interval
        self.published = False
        self.dirty = False

    def feed(self, chunk: bytes) -> None:
        self.tail += chunk[-self.size :]
        del self.tail[: -self.size]
        self.dirty = True

    def tick(self) -> None:
        """Called while the command runs: publish what is new, if it is time."""
        now = time.monotonic()
        if not self.dirty or now - self.published_at < TAIL_PUBLISH_SECONDS:
            return
        self.published_at = now
        self.dirty = False
        try:
            self.publish(bytes(self.tail))
            self.published = True
        except Exception as e:  # best effort: the local spool is the record
            log.debug("could not publish the output tail: %s", e)


def _spool_holders(pgid: int, groups: _CommandGroups, spool: OutputSpool) -> Callable[[], bool]:
    """Whether a live process of the command still has its spool open (what
    EOF on a pipe told: a background child writing to it)."""
    target = os.fstat(spool.write_fd)

    def alive() -> bool:
        # The cgroup holds all it started, setsid or not; else its process group.
        cgroup = groups.cgroup
        members = cgroup.pids() if cgroup is not None else process_group_members(pgid)
        return any(holds_file(pid, target) for pid in members if pid != pgid)

    return alive


@tool("terminal", TerminalArgs, risk="HIGH")
def run_terminal(args: TerminalArgs, ctx: ToolContext) -> dict[str, Any]:
    """Run a bash command; returns its exit code and (capped) combined output."""
    shell = shutil.which("bash", path=ctx.env.get("PATH")) or "/bin/sh"
    started = time.monotonic()
    folder = spool_folder(str(ctx.output_spool_dir) if ctx.output_spool_dir else None, create=True)
    spool = OutputSpool(spool_path(folder, ctx.action_id), ctx.output_tail_bytes)
    publisher = (
        _TailPublisher(ctx.output_tail_bytes, ctx.publish_output_tail)
        if ctx.output_tail_bytes
        else None
    )
    try:
        groups = _CommandGroups.create(ctx)
        if groups.cgroup is not None or groups.memory is not None:
            # Recorded before the command can start anything: a crash right after
            # the start still finds all of it.
            ctx.register_process_group(groups.record())
        proc, groups = _start(args, ctx, shell, groups, spool.write_fd)
    except BaseException:
        spool.close_and_remove()
        raise
    usage: MemoryUsage | None = None
    try:
        ctx.register_process_group(groups.record(proc.pid))
        output, timed_out = follow_until_exit(
            spool,
            ctx.max_output_bytes,
            started + args.timeout,
            proc.pid,
            _OUTPUT_LINGER_SECONDS,
            _spool_holders(proc.pid, groups, spool),
            publisher.feed if publisher is not None else None,
            publisher.tick if publisher is not None else None,
        )
    finally:
        # Nothing it started outlives it. The shell is not reaped yet, so its
        # pid (= the group id) cannot have been reused.
        groups.kill()
        kill_process_group(proc.pid)
        spool.close_and_remove()
        if publisher is not None and publisher.published:
            with contextlib.suppress(Exception):
                ctx.forget_output_tail()
        exit_code, max_rss = _reap(proc)
        if groups.memory is not None:
            usage = groups.memory.usage()  # before the cgroup and its counters are gone
        groups.remove()
    if usage is not None and usage.killed_by is not None:
        # The kernel killed (part of) it for memory: a crash, since what it
        # did before may stand; the worker records it, and goes on.
        raise CommandOutOfMemory(
            args.command,
            killed_by=usage.killed_by,
            limit_bytes=usage.limit_bytes,
            peak_bytes=usage.peak_bytes if usage.peak_bytes is not None else max_rss,
            signal=-exit_code if exit_code < 0 else None,
            exitcode=exit_code if exit_code >= 0 else None,
            output_tail=bytes(publisher.tail) if publisher is not None else None,
        )
    if timed_out:
        exit_code = TIMEOUT_EXIT_CODE
    return {
        "command": args.command,
        "exit_code": exit_code,
        "output": output.text(),
        "truncated": output.truncated,
        "timed_out": timed_out,
        "duration_s": round(time.monotonic() - started, 3),
    }


@tool("think", ThinkArgs, risk="LOW")
def run_think(args: ThinkArgs, ctx: ToolContext) -> dict[str, Any]:
    """Use the tool to think about something. It will not obtain new information or make
    any changes, but just log the thought. Use it when complex reasoning or brainstorming
    is needed: planning the next steps, weighing approaches, or sorting out what a result
    means."""
    return {"output": THINK_OUTPUT}


@tool("finish", FinishArgs, risk="LOW")
def run_finish(args: FinishArgs, ctx: ToolContext) -> dict[str, Any]:
    """Declare the task done, with a final message."""
    return {"message": args.message}
