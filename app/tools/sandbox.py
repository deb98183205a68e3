"""What a tool's command can reach and leave behind.

- A clean environment: an allow-list of harmless variables, never ``ACTIONQ_*``
  and nothing that looks like a secret unless it is listed by name; a worker
  that runs tools drops the secret key settings (``ACTIONQ_SECRET*``) from its
  own environment too, for its in-process tools.
- A cgroup v2 per command where the machine allows it (``cgroup.kill`` ends
  everything the command started, ``setsid`` or not); else its process group.
- A memory cap per command in a cgroup (``MemoryCgroup``: the command's own
  cgroup v2, or a cgroup of its own on a v1 memory hierarchy), and what it
  counted: the peak, and whether the kernel killed anything for memory.
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

from actionq.secrets import is_secret_setting

__all__ = [
    "BASE_ENV_NAMES",
    "CommandCgroup",
    "MemoryCgroup",
    "MemoryUsage",
    "ProcessGroup",
    "boot_id",
    "cgroup_directories",
    "die_with_parent_hook",
    "kill_process_group",
    "parse_flat_keyed",
    "parse_memory_value",
    "process_group_members",
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


def scrub_worker_environ(runs_tools: bool = True) -> list[str]:
    """A worker never serves the API: drop the API keys from its environment
    before the pool forks, so no tool (in-process or not) can read them. A
    worker that ``runs_tools`` also drops the secret key settings
    (``ACTIONQ_SECRET*``): only agent workers open sealed secrets. Returns the
    secret key settings it dropped."""
    for name in _WORKER_UNNEEDED:
        os.environ.pop(name, None)
    if not runs_tools:
        return []
    dropped = sorted(name for name in os.environ if is_secret_setting(name))
    for name in dropped:
        del os.environ[name]
    return dropped


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
    # A cgroup v1 memory directory that holds it too (hosts whose memory
    # controller is on a v1 hierarchy); None: its memory is in ``cgroup``, or
    # it has no memory cgroup.
    memory_cgroup: str | None = None

    def memory(self) -> MemoryCgroup | None:
        """The cgroup that counts its memory, if any is recorded and still there."""
        if self.memory_cgroup:
            group = MemoryCgroup(Path(self.memory_cgroup), v1=True)
        elif self.cgroup:
            group = MemoryCgroup(Path(self.cgroup), v1=False)
        else:
            return None
        return group if group.path.is_dir() else None

    def kill(self) -> str:
        """Kill what is left of the group, unless the pid now names a different
        process. Returns what it did (for the log)."""
        done = self._kill_group()
        if self.memory_cgroup:
            group = MemoryCgroup(Path(self.memory_cgroup), v1=True)
            if group.path.is_dir() and os.access(group.path / "cgroup.procs", os.W_OK):
                # Everything in it is the command's (the name holds the action id):
                # on a cgroup-v1-only host this is what ends a `setsid x &`.
                group.kill()
                group.remove()
                done += f"; killed memory cgroup {self.memory_cgroup}"
        return done

    def _kill_group(self) -> str:
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


def process_group_members(pgid: int) -> list[int]:
    """The processes whose process group is ``pgid`` (a scan of /proc)."""
    return [pid for pid in _pids() if _process_group_of(pid) == pgid]


def kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def cgroup_directories(
    proc_cgroup: str, mountinfo: str, controller: str | None = None
) -> list[Path]:
    """Where this process's cgroup lies in the mounted trees, from the text of
    /proc/self/cgroup and /proc/self/mountinfo: its cgroup v2 directory
    (``controller`` None), or its directory on the v1 hierarchy that holds
    ``controller`` (hybrid hosts). One candidate per matching mount."""
    own = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if controller is None:
            wanted = hierarchy == "0" and not controllers
        else:
            wanted = controller in controllers.split(",")
        if wanted:
            own = path.strip()
    if own is None:
        return []
    found = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fs = after.split()
        fields = before.split()
        if len(fields) < 5 or not fs:
            continue
        if controller is None and fs[0] != "cgroup2":
            continue
        if controller is not None and (
            fs[0] != "cgroup" or len(fs) < 3 or controller not in fs[2].split(",")
        ):
            continue
        root, mount_point = fields[3], fields[4]
        relative = own
        # In a cgroup namespace (a container) the mount's root is the
        # namespace's own cgroup: paths are relative to it.
        if root != "/" and (own == root or own.startswith(root + "/")):
            relative = own[len(root) :] or "/"
        found.append(Path(mount_point, relative.lstrip("/")))
    return found


def _own_cgroup(controller: str | None) -> Path | None:
    """This process's cgroup directory (v2, or v1 of ``controller``), if it is
    writable (we may make children in it)."""
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    for base in cgroup_directories(proc_cgroup, mountinfo, controller):
        if (base / "cgroup.procs").exists() and os.access(base, os.W_OK):
            return base
    return None


@lru_cache(maxsize=1)
def _cgroup_base() -> Path | None:
    """This process's own cgroup v2 directory, if it is writable; None on
    cgroup v1-only machines or without permission."""
    return _own_cgroup(None)


@lru_cache(maxsize=1)
def _memory_v1_base() -> Path | None:
    """This process's directory on a cgroup v1 memory hierarchy, if there is
    one and it is writable (hybrid hosts: the memory controller is bound to
    v1, so cgroup v2 directories have no ``memory.max``)."""
    return _own_cgroup("memory")


def _kill_members(path: Path) -> None:
    """SIGKILL the processes of a cgroup one by one until it is empty."""
    for _ in range(100):  # a fork may race a round; repeat until empty
        pids = _cgroup_pids(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _cgroup_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _remove_cgroup(path: Path, timeout: float) -> None:
    """rmdir once its processes are gone (bounded; logged if it cannot)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if time.monotonic() > deadline:
                log.warning("could not remove cgroup %s: %s", path, e)
                return
        time.sleep(0.01)


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
        return _cgroup_pids(self.path)

    def kill(self) -> None:
        """SIGKILL everything in it (cgroup.kill since Linux 5.14; else one by one)."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
        _kill_members(self.path)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove it once its processes are gone (bounded; logged if it cannot)."""
        _remove_cgroup(self.path, timeout)


@lru_cache(maxsize=8)
def _say_once(message: str) -> None:
    """Log a fact about this process's setup once (for the operator)."""
    log.info(message)


# cgroup v1 writes "no limit" as the largest page-aligned counter value.
_V1_UNLIMITED = 1 << 62
# The kernel charges memory to a cgroup in batches of up to 64 pages.
_V1_CHARGE_BATCH = 64 * 4096


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A cgroup "flat keyed" file (``memory.events``, v1's ``memory.oom_control``):
    one ``name value`` pair per line. Lines that are not are skipped."""
    counters: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            counters[parts[0]] = int(parts[1])
    return counters


def parse_memory_value(text: str) -> int | None:
    """A byte count from ``memory.max``/``memory.peak``/``memory.limit_in_bytes``;
    None for no limit (v2 ``max``, v1's huge counter)."""
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= _V1_UNLIMITED else number


@dataclass(frozen=True)
class MemoryUsage:
    """What a command's memory cgroup counted (read once the command ended)."""

    limit_bytes: int | None  # the cap; None: no cap
    # The most the cgroup ever held: what the cap counts (resident memory,
    # page cache, kernel memory of all its processes together). None: not
    # known (cgroup v2 before Linux 5.19 has no memory.peak).
    peak_bytes: int | None
    oom_kills: int  # processes of the command the kernel killed for memory
    # The kernel ran out of room under the cap itself (v2: memory.events
    # "oom"; v1: memory.failcnt), as opposed to the whole machine running out.
    limit_reached: bool

    @property
    def killed_by(self) -> str | None:
        """``memory_limit`` (its cap), ``oom_killer`` (the machine ran out), or
        None: nothing of the command was killed for memory."""
        if not self.oom_kills:
            return None
        return "memory_limit" if self.limit_reached else "oom_killer"


class MemoryCgroup:
    """Where one command's memory is capped and counted.

    On cgroup v2 it is the command's own cgroup (``memory.max``), where the
    worker's cgroup gives its children the memory controller: Linux allows
    that only to the root cgroup or to one without processes of its own, so
    typically a worker run as the root cgroup's process or in a container
    set up for it. On hybrid hosts (the memory controller bound to a cgroup
    v1 hierarchy, as on this project's CI machine) it is a directory of its
    own there, which the command joins too. Elsewhere there is none and the
    cap falls back to RLIMIT_AS (``actionq.tools.builtin``).
    """

    def __init__(self, path: Path, v1: bool) -> None:
        self.path = path
        self.v1 = v1

    @classmethod
    def create(
        cls, name: str, command_cgroup: CommandCgroup | None, limit_bytes: int
    ) -> MemoryCgroup | None:
        """Cap the command at ``limit_bytes``: in its v2 cgroup if that has the
        memory controller, else in a new v1 memory cgroup ``name``; None where
        neither is possible."""
        group = cls._create(name, command_cgroup, limit_bytes)
        _say_once(
            "commands' memory cap: "
            + ("RLIMIT_AS (no memory cgroup)" if group is None else f"cgroup {group.path.parent}")
        )
        return group

    @classmethod
    def _create(
        cls, name: str, command_cgroup: CommandCgroup | None, limit_bytes: int
    ) -> MemoryCgroup | None:
        if command_cgroup is not None and (command_cgroup.path / "memory.max").exists():
            group = cls(command_cgroup.path, v1=False)
        else:
            base = _memory_v1_base()
            if base is None:
                return None
            group = cls(base / name, v1=True)
            try:
                if group.path.is_dir():  # left by an earlier run: its counters are not ours
                    group.kill()
                    group.path.rmdir()
                group.path.mkdir()
            except OSError as e:
                log.info("no memory cgroup for tool commands (%s); using RLIMIT_AS", e)
                return None
        try:
            group._set_limit(limit_bytes)
        except OSError as e:
            log.warning("cannot cap memory in cgroup %s (%s); using RLIMIT_AS", group.path, e)
            group.remove()
            return None
        return group

    def _write(self, name: str, value: str, optional: bool = False) -> None:
        # Without O_CREAT: cgroupfs refuses to create a file (EACCES), so a
        # file this kernel lacks must show up as missing (ENOENT).
        try:
            fd = os.open(self.path / name, os.O_WRONLY | os.O_TRUNC)
        except FileNotFoundError:
            if optional:
                return
            raise
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def _set_limit(self, limit: int) -> None:
        if self.v1:
            self._write("memory.limit_in_bytes", str(limit))
            # memory + swap: equal to the limit means no swap (only where the
            # kernel accounts swap; it must come after limit_in_bytes).
            self._write("memory.memsw.limit_in_bytes", str(limit), optional=True)
            return
        self._write("memory.max", str(limit))
        self._write("memory.swap.max", "0", optional=True)  # the cap is not dodged by swapping
        # One process past the cap kills the whole command, not just the
        # largest process while its shell goes on with the next step.
        self._write("memory.oom.group", "1", optional=True)

    def join_in_child(self) -> None:
        """Move the calling process in (the forked child, before exec). A v2
        group is the command's own cgroup, which the child has joined already."""
        if self.v1:
            fd = os.open(self.path / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def usage(self) -> MemoryUsage | None:
        """What it counted; None if it cannot be read (gone, no permission)."""
        try:
            if self.v1:
                return self._usage_v1()
            events = parse_flat_keyed(self._read("memory.events"))
            try:
                peak: int | None = parse_memory_value(self._read("memory.peak"))
            except FileNotFoundError:  # Linux < 5.19
                peak = None
            return MemoryUsage(
                limit_bytes=parse_memory_value(self._read("memory.max")),
                peak_bytes=peak,
                oom_kills=events.get("oom_kill", 0),
                limit_reached=events.get("oom", 0) > 0,
            )
        except (OSError, ValueError):
            return None

    def _usage_v1(self) -> MemoryUsage:
        oom = parse_flat_keyed(self._read("memory.oom_control"))
        limit = parse_memory_value(self._read("memory.limit_in_bytes"))
        peak = int(self._read("memory.max_usage_in_bytes"))
        failures = int(self._read("memory.failcnt"))
        with contextlib.suppress(FileNotFoundError):
            failures += int(self._read("memory.memsw.failcnt"))
        # Recent kernels no longer count failcnt on v1; but usage never passes
        # the limit there, so a peak within one charge batch of it means the
        # cap itself ran out.
        reached = failures > 0 or (limit is not None and peak >= limit - _V1_CHARGE_BATCH)
        return MemoryUsage(limit, peak, oom.get("oom_kill", 0), reached)

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def kill(self) -> None:
        """SIGKILL everything in a v1 group (v1 has no cgroup.kill); a v2
        group is killed as the command's cgroup."""
        if self.v1:
            _kill_members(self.path)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove a v1 group once it is empty (a v2 group is the command's
        cgroup, removed with it)."""
        if self.v1:
            _remove_cgroup(self.path, timeout)


def command_memory_cap_available() -> bool:
    """Whether a command started here could be capped by a memory cgroup
    (else its cap is an address-space limit): a probe group is made and
    removed. For ``actionq demo``, which tells its story either way."""
    name = f"actionq-probe-{os.getpid()}"
    command_cgroup = CommandCgroup.create(name)
    try:
        group = MemoryCgroup._create(name, command_cgroup, 64 * 1024 * 1024)
        if group is None:
            return False
        if group.v1:
            group.remove()
        return True
    finally:
        if command_cgroup is not None:
            command_cgroup.remove()
