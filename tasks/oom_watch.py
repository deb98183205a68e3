"""Was a dead pool child killed by the kernel's OOM killer? (worker's main process)

A pool child killed by SIGKILL may have been ended by anyone (``kill -9``, a
supervisor, the OOM killer). The kernel's log is the one place that says
which process its OOM killer killed, by pid:
``Memory cgroup out of memory: Killed process 8526 (python3) total-vm:…kB,
anon-rss:…kB, file-rss:…kB, shmem-rss:…kB, …``. So the main process reads
``/dev/kmsg`` from the end (only what is logged after it starts), a
non-blocking read at each pool maintenance, keeps the OOM kills it finds,
and notes which pool child (``Request.worker_pid``) runs which action.
When a child running an action dies by SIGKILL, a kill of that pid logged
after the action was first seen running is the answer: ``killed_by:
"oom_killer"``.

Cheap (one read per maintenance tick, usually ``EAGAIN``) and exact (by
pid, and only records logged while that pid was our pool child). Where the
log cannot be read (not root without ``CAP_SYSLOG`` while
``kernel.dmesg_restrict=1``, a container without ``/dev/kmsg``) nothing is
claimed: ``killed_by`` stays null. An action that dies within one tick of
its start is not known either. The resident size the kernel logged at the
kill goes into the error text, not into ``max_rss_bytes``: it is the size at
that moment, not a peak.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["KernelLog", "OomKill", "OomWatch", "oom_watch", "parse_oom_kill", "start_oom_watch"]

log = logging.getLogger(__name__)

_KILLED = re.compile(
    r"Killed process (\d+) \((.*)\) total-vm:\d+kB, anon-rss:(\d+)kB, file-rss:(\d+)kB"
    r"(?:, shmem-rss:(\d+)kB)?"
)
_KEPT_KILLS = 256  # the newest OOM kills kept for lookups (a burst kills a few)


@dataclass(frozen=True)
class OomKill:
    seq: int  # the kernel log record's sequence number
    pid: int
    name: str
    rss_bytes: int  # resident (anon + file + shmem) when it was killed


def parse_record(record: str) -> tuple[int, str] | None:
    """(sequence number, message) of one /dev/kmsg record
    (``prio,seq,usec,flags;message`` then continuation lines)."""
    head, sep, rest = record.partition(";")
    fields = head.split(",")
    if not sep or len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1]), rest.split("\n", 1)[0]


def parse_oom_kill(record: str) -> OomKill | None:
    """The OOM kill a /dev/kmsg record reports, if it reports one."""
    parsed = parse_record(record)
    if parsed is None:
        return None
    seq, message = parsed
    match = _KILLED.search(message)
    if match is None:
        return None
    pid, name, anon, file, shmem = match.groups()
    rss_kib = int(anon) + int(file) + int(shmem or 0)
    return OomKill(seq=seq, pid=int(pid), name=name, rss_bytes=rss_kib * 1024)


class KernelLog:
    """/dev/kmsg, read from where it stood when opened."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: str = "/dev/kmsg") -> KernelLog | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            log.info("kernel log not readable (%s): OOM kills of pool children are not named", e)
            return None
        try:
            os.lseek(fd, 0, os.SEEK_END)  # only records logged from now on
        except OSError:
            os.close(fd)
            return None
        return cls(fd)

    def new_records(self, at_most: int = 10_000) -> Iterable[str]:
        """Records logged since the last call (one read each, never blocking)."""
        for _ in range(at_most):
            try:
                data = os.read(self.fd, 8192)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten before we read it: go on
                    continue
                if e.errno == errno.EINVAL:  # a record longer than the buffer
                    continue
                raise
            if not data:
                return
            yield data.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class OomWatch:
    """Which pool child runs which action, and the OOM kills the kernel logged."""

    def __init__(self, kernel_log: KernelLog | None) -> None:
        self._log = kernel_log
        self._last_seq = -1  # of the newest record read
        self._kills: deque[OomKill] = deque(maxlen=_KEPT_KILLS)
        # action id -> (pool child pid, the last record read before the action
        # was first seen running there: later kills of that pid are its own)
        self._running: dict[str, tuple[int, int]] = {}

    @property
    def enabled(self) -> bool:
        return self._log is not None

    def _read(self) -> None:
        if self._log is None:
            return
        try:
            for record in self._log.new_records():
                parsed = parse_record(record)
                if parsed is not None:
                    self._last_seq = max(self._last_seq, parsed[0])
                kill = parse_oom_kill(record)
                if kill is not None:
                    self._kills.append(kill)
        except OSError as e:
            log.warning("kernel log read failed (%s); OOM kills are no longer named", e)
            self._log.close()
            self._log = None

    def observe(self, running: Iterable[tuple[str, int | None]]) -> None:
        """The (action id, pool child pid) pairs running now (pid None: not
        started yet). Called before each pool maintenance, so a child that just
        died is still listed with its action."""
        if self._log is None:
            return
        before = self._last_seq
        self._read()
        seen: dict[str, tuple[int, int]] = {}
        for action_id, pid in running:
            if pid is None:
                continue
            known = self._running.get(action_id)
            seen[action_id] = known if known is not None and known[0] == pid else (pid, before)
        self._running = seen

    def oom_kill_of(self, action_id: str) -> OomKill | None:
        """The kernel's OOM kill of the pool child that ran ``action_id``, if
        it logged one while that child ran it; None if none or not known."""
        known = self._running.get(action_id)
        if known is None or self._log is None:
            return None
        self._read()
        pid, since = known
        for kill in reversed(self._kills):
            if kill.pid == pid and kill.seq > since:
                return kill
        return None


_watch = OomWatch(None)


def start_oom_watch() -> OomWatch:
    """In the worker's main process, at start: read the kernel log from now on."""
    global _watch
    _watch = OomWatch(KernelLog.open())
    return _watch


def oom_watch() -> OomWatch:
    """This process's watch (one that knows nothing outside a worker)."""
    return _watch
