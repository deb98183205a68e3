"""What a tool's command can reach and leave behind.

- A clean environment: an allow-list of harmless variables, never ``ACTIONQ_*``
  and nothing that looks like a secret unless it is listed by name.
- A cgroup v2 per command where the machine allows it (``cgroup.kill`` ends
  everything the command started, ``setsid`` or not); else its process group.
- The identity of that group (leader start time + boot id), so a kill hours
  later never hits a process that merely reuses the pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "BASE_ENV_NAMES",
    "CommandCgroup",
    "ProcessGroup",
    "boot_id",
    "die_with_parent_hook",
    "kill_process_group",
    "process_start_ticks",
    "scrub_worker_environ",
    "tool_environment",
]

log = logging.getLogger(__name__)

BASE_ENV_NAMES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_*",
    "TERM",
    "TZ",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
)
# A variable matched only by a pattern (LC_*, or one in ACTIONQ_TOOL_ENV_ALLOW)
# is still dropped when its name looks like one of these.
_SECRET_PATTERNS = ("*API_KEY*", "*PASSWORD*", "*PASSWD*", "*SECRET*", "*TOKEN*", "*CREDENTIAL*")
_OWN_PREFIX = "ACTIONQ_"
# Workers never need these; the API and CLI do.
_WORKER_UNNEEDED = ("ACTIONQ_API_KEYS", "ACTIONQ_API_KEY")
_PR_SET_PDEATHSIG = 1


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def _looks_secret(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name.upper(), s) for s in _SECRET_PATTERNS)


def tool_environment(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The environment a tool's command gets: ``BASE_ENV_NAMES`` plus ``allow``
    (names or shell-style patterns). A name listed exactly always passes; a
    pattern match passes unless it looks like a secret; ``ACTIONQ_*`` never."""
    wanted = [*BASE_ENV_NAMES, *allow]
    exact = {name for name in wanted if not _is_pattern(name)}
    patterns = [name for name in wanted if _is_pattern(name)]
    env: dict[str, str] = {}
    for name, value in environ.items():
        if name.upper().startswith(_OWN_PREFIX):
            continue
        by_pattern = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if name in exact or (by_pattern and not _looks_secret(name)):
            env[name] = value
    return env


def scrub_worker_environ() -> None:
    """A worker never serves the API: drop the API keys from its environment
    before the pool forks, so no tool (in-process or not) can read them."""
    for name in _WORKER_UNNEEDED:
        os.environ.pop(name, None)


@lru_cache(maxsize=1)
def die_with_parent_hook(sig: int) -> Callable[[], None] | None:
    """For a ``preexec_fn`` (it runs in the forked child): ask the kernel to
    send ``sig`` to the child when its parent dies, so nothing outlives the
    process that started it. None where there is no such call (not Linux)."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return hook


def boot_id() -> str | None:
    """This boot of the machine (a pid recorded before a reboot means nothing)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/<pid>/stat field
    22); None if there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22; fields[0] is field 3


def _process_group_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[2])  # field 5


@dataclass(frozen=True)
class ProcessGroup:
    """A command's process group (and cgroup, if it has one), as recorded with
    its action so that the worker can kill what is left of it later."""

    pgid: int | None  # None: recorded before the command started (cgroup only)
    start_ticks: int | None  # of the group leader (pid == pgid)
    boot_id: str | None
    cgroup: str | None = None  # cgroup v2 directory that holds the command

    def kill(self) -> str:
        """Kill what is left of the group, unless the pid now names a different
        process. Returns what it did (for the log)."""
        if self.cgroup:
            group = CommandCgroup(Path(self.cgroup))
            # (Not ours to kill from here, e.g. the API as another user: the
            # process-group check below still applies.)
            if group.path.is_dir() and os.access(group.path / "cgroup.kill", os.W_OK):
                group.kill()
                group.remove()
                return f"killed cgroup {self.cgroup}"
        if self.pgid is None:
            return "nothing to kill: no process group recorded"
        if self.boot_id is None or self.start_ticks is None or self.boot_id != boot_id():
            return "not killed: recorded on another boot (or without an identity)"
        leader_start = process_start_ticks(self.pgid)
        if leader_start is not None:
            if leader_start != self.start_ticks:
                return f"not killed: pid {self.pgid} is now another process"
            kill_process_group(self.pgid)
            return f"killed process group {self.pgid}"
        # The leader is gone but members may live on; while any does, the kernel
        # does not hand the pgid out again, so members that started after the
        # leader are its own.
        killed = 0
        for pid in _pids():
            if _process_group_of(pid) == self.pgid:
                started = process_start_ticks(pid)
                if started is not None and started >= self.start_ticks:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
        return f"killed {killed} process(es) left in group {self.pgid}"


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@lru_cache(maxsize=1)
def _cgroup_base() -> Path | None:
    """This process's own cgroup v2 directory, if it is writable (we may make
    children in it); None on cgroup v1-only machines or without permission."""
    try:
        own = next(
            line[3:].strip()
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        )
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except (OSError, StopIteration):
        return None
    for line in mounts:
        before, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            fields = before.split()
            root, mount_point = fields[3], fields[4]
            if root != "/" and (own == root or own.startswith(root + "/")):
                own = own[len(root) :] or "/"
            base = Path(mount_point, own.lstrip("/"))
            if (base / "cgroup.procs").exists() and os.access(base, os.W_OK):
                return base
    return None


class CommandCgroup:
    """A cgroup v2 directory holding one command and all it starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str) -> CommandCgroup | None:
        """A new child of this process's cgroup, or None where that is not possible."""
        base = _cgroup_base()
        if base is None:
            return None
        group = cls(base / name)
        try:
            group.path.mkdir()
        except FileExistsError:  # left by an earlier run: empty it and reuse it
            group.kill()
        except OSError as e:
            log.info("no cgroup for tool commands (%s); using process groups", e)
            return None
        return group

    def join_in_child(self) -> None:
        """Move the calling process into the cgroup (the forked child, before exec)."""
        fd = os.open(self.path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL everything in it (cgroup.kill since Linux 5.14; else one by one)."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
        for _ in range(100):  # a fork may race a round; repeat until empty
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove it once its processes are gone (bounded; logged if it cannot)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    log.warning("could not remove cgroup %s: %s", self.path, e)
                    return
            time.sleep(0.01)
