"""The data folder of ``actionq up``: its lock, its secret files, its pidfiles.

One ``actionq up`` owns a folder at a time. It holds an exclusive ``flock`` on
``up.lock`` for its whole life; the kernel drops the lock when the process
dies however it dies, so a held lock means a live ``up`` and a free one means
that whatever its pidfiles name was left behind. The lock file also says who
holds it (pid, start time, API address), for the error a second ``up`` prints
and for ``actionq env``.

Secrets (API key, server password, connection files) are written 0600 in a
0700 folder, atomically: a reader never sees half a key. Processes are known
by pid *and* start time, so a reused pid is never mistaken for ours.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DataFolder",
    "FolderInUseError",
    "UpInfo",
    "ensure_private_dir",
    "process_start_time",
    "read_pidfile",
    "write_pidfile",
    "write_secret_file",
]

LOCK_NAME = "up.lock"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: only its owner may look."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically (write a new file,
    then rename it over the old one), so it is never readable by others, not
    even for a moment, and never seen half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """The secret kept in ``path``; a new random one if there is none."""
    if not path.exists():
        write_secret_file(path, secrets.token_urlsafe(nbytes))
    path.chmod(0o600)  # a file from an older version may be 0644
    return path.read_text(encoding="utf-8").strip()


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot, field 22 of
    /proc/<pid>/stat), or None if there is no such process. A pid can be
    reused; pid and start time together cannot."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split
    # after its closing parenthesis. Field 22 is then the 20th of the rest.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is gone, only not reaped yet
        return None
    return int(fields[19])


def write_pidfile(path: Path, pid: int) -> None:
    start_time = process_start_time(pid)
    write_secret_file(path, json.dumps({"pid": pid, "start_time": start_time}))


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path`` if that very process (same start time) still runs;
    None for a missing or old-format file, or a pid now used by another."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        pid, start_time = int(recorded["pid"]), int(recorded["start_time"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return pid if process_start_time(pid) == start_time else None


@dataclass(frozen=True)
class UpInfo:
    """What the running ``actionq up`` wrote into its lock file."""

    pid: int
    start_time: int | None
    api_url: str
    settings: dict[str, str]

    def is_running(self) -> bool:
        return self.start_time is not None and process_start_time(self.pid) == self.start_time


class FolderInUseError(Exception):
    """Another live ``actionq up`` holds the folder's lock."""

    def __init__(self, data_dir: Path, holder: UpInfo | None) -> None:
        who = f"pid {holder.pid}, API {holder.api_url}" if holder else "pid unknown"
        super().__init__(f"another actionq up is running on {data_dir} ({who})")


class DataFolder:
    """A data folder and, once :meth:`lock` succeeded, its lock."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def holder(self) -> UpInfo | None:
        """Who the lock file says holds it (may be stale: check is_running)."""
        try:
            recorded: dict[str, Any] = json.loads(self.lock_path.read_text(encoding="utf-8"))
            return UpInfo(
                int(recorded["pid"]),
                recorded.get("start_time"),
                str(recorded["api_url"]),
                dict(recorded.get("settings") or {}),
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def check_not_locked(self) -> None:
        """Raise FolderInUseError if a live ``up`` holds the lock; create nothing."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(self.path, self.holder()) from None
        finally:
            os.close(fd)  # also releases the lock if we got it

    def lock(self, api_url: str) -> None:
        """Create the folder (0700) and take its lock for this process's life."""
        ensure_private_dir(self.path)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A live holder: refuse now. No live holder: someone only
                # peeked (check_not_locked, for a moment); try again briefly.
                holder = self.holder()
                if (holder is not None and holder.is_running()) or time.monotonic() > deadline:
                    os.close(fd)
                    raise FolderInUseError(self.path, holder) from None
                time.sleep(0.05)
        # Ours now: say who we are (truncate only after locking, so a loser
        # never wipes the winner's record).
        os.fchmod(fd, 0o600)
        self._lock_fd = fd
        self.publish(api_url, {})

    def publish(self, api_url: str, settings: dict[str, str]) -> None:
        """Record in the lock file who holds it and the settings (no secrets)
        another worker or client needs to join it."""
        assert self._lock_fd is not None, "publish needs the lock"
        pid = os.getpid()
        record = {
            "pid": pid,
            "start_time": process_start_time(pid),
            "api_url": api_url,
            "settings": settings,
        }
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, json.dumps(record).encode(), 0)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
