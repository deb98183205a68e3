"""A terminal command's output spool: the file its stdout and stderr go to.

The command writes straight into ``<spool folder>/<action id>.out`` (opened
O_APPEND, 0600, in a 0700 folder of the worker's user), and the tool process
follows the file. Output is on disk the moment the command's ``write``
returns, so it outlives the tool process: a command that kills the process
reading it (``echo x; kill -9 $PPID``) still leaves its last output for the
crash handler, which a pipe cannot (its buffer dies with the reader).

Bounds: the follower keeps the file's blocks only for the last part it has
not yet read plus the tail a crash would report (``keep_bytes``); what is
older is freed with ``fallocate(PUNCH_HOLE)`` (the file's size grows, its
disk use does not). The follower deletes the file when the command ends; a
crash handler reads the tail, then deletes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import selectors
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from actionq.tools.output import BoundedOutput, _has_exited, _pidfd

__all__ = [
    "OutputSpool",
    "decode_tail",
    "default_spool_folder",
    "follow_until_exit",
    "read_spool_tail",
    "remove_spool",
    "spool_folder",
    "spool_path",
]

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
_READ_CHUNK = 1 << 20
# Freed in steps of this much (block-aligned), so a chatty command costs one
# fallocate per MiB, not one per read.
_PUNCH_STEP = 1 << 20
_BLOCK = 4096
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def default_spool_folder() -> Path:
    """Per user and host: the worker's main process and the sweeper of the
    same host find a pool child's spool by action id."""
    return Path(tempfile.gettempdir()) / f"actionq-output-{os.getuid()}"


def spool_folder(configured: str | None = None, *, create: bool = False) -> Path:
    """The spool folder (``ACTIONQ_OUTPUT_SPOOL_DIR``, else the default); with
    ``create``, made 0700 and checked to be the user's own, not a symlink and
    closed to others (a folder in /tmp another user made first is refused)."""
    folder = Path(configured) if configured else default_spool_folder()
    if create:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=FOLDER_MODE, parents=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise PermissionError(f"output spool folder {folder} is not a folder of this user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(folder, FOLDER_MODE)
    return folder


def spool_path(folder: Path, action_id: str) -> Path:
    return folder / f"{action_id}.out"


def decode_tail(data: bytes) -> str:
    """The tail as text: a character cut at the start is dropped, the rest is
    decoded utf-8 with replacement."""
    start = 0
    while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:].decode("utf-8", "replace")


def read_spool_tail(path: Path, max_bytes: int) -> bytes | None:
    """The last ``max_bytes`` of a spool file, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - max_bytes)
        return os.pread(fd, size - start, start)
    finally:
        os.close(fd)


def remove_spool(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


_fallocate = _load_fallocate()


class OutputSpool:
    """One command's spool file: ``write_fd`` is given to the command as its
    stdout and stderr; ``drain`` reads what is new and frees what is old."""

    def __init__(self, path: Path, keep_bytes: int) -> None:
        self.path = path
        self.keep_bytes = keep_bytes
        # O_EXCL: never a file (or a link) left there by someone else.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self.write_fd = os.open(path, flags, FILE_MODE)
        self.read_offset = 0
        self.freed_upto = 0
        self.punch_failed = False

    def drain(self, feed: Callable[[bytes], None]) -> int:
        """Feed all that was written since the last call; returns how much."""
        got = 0
        while True:
            chunk = os.pread(self.write_fd, _READ_CHUNK, self.read_offset)
            if not chunk:
                break
            self.read_offset += len(chunk)
            got += len(chunk)
            feed(chunk)
        if got:
            self._free_old()
        return got

    def _free_old(self) -> None:
        upto = (self.read_offset - self.keep_bytes) // _BLOCK * _BLOCK
        if self.punch_failed or _fallocate is None or upto - self.freed_upto < _PUNCH_STEP:
            return
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _fallocate(self.write_fd, mode, self.freed_upto, upto - self.freed_upto) != 0:
            self.punch_failed = True
            code = ctypes.get_errno()
            log.warning(
                "cannot free the read part of output spool %s (%s): it grows with the output",
                self.path,
                errno.errorcode.get(code, code),
            )
            return
        self.freed_upto = upto

    def close_and_remove(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.write_fd)
        remove_spool(self.path)


def follow_until_exit(
    spool: OutputSpool,
    max_bytes: int,
    deadline: float,
    pid: int,
    linger: float,
    holders_alive: Callable[[], bool],
    on_output: Callable[[bytes], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    tick: float = 0.05,
) -> tuple[BoundedOutput, bool]:
    """Read a command's spool until it has exited and no process of it still
    holds the spool open (``holders_alive``), or ``linger`` seconds after it
    exited (a background child may write for ever), or until ``deadline``.
    Returns the output and whether the deadline passed first; as
    ``read_until_exit`` did for a pipe. ``pid`` (a child of this process) is
    not reaped. ``on_output`` gets every chunk read; ``on_tick`` is called
    after each read while the command runs (at least every ``tick`` s)."""
    out = BoundedOutput(max_bytes)

    def feed(chunk: bytes) -> None:
        out.feed(chunk)
        if on_output is not None:
            on_output(chunk)

    exit_fd = _pidfd(pid)
    exited = False
    stop_at = deadline
    try:
        with selectors.DefaultSelector() as sel:
            if exit_fd is not None:
                sel.register(exit_fd, selectors.EVENT_READ)
            while True:
                spool.drain(feed)
                if on_tick is not None:
                    on_tick()
                if exited and not holders_alive():
                    spool.drain(feed)  # what the last holder wrote before it went
                    return out, False
                remaining = stop_at - time.monotonic()
                if remaining <= 0:
                    spool.drain(feed)
                    return out, not exited
                wait = min(remaining, tick)
                if exited or exit_fd is None:
                    time.sleep(wait)
                    if not exited and _has_exited(pid):
                        exited, stop_at = True, min(deadline, time.monotonic() + linger)
                elif sel.select(timeout=wait):
                    sel.unregister(exit_fd)
                    exited, stop_at = True, min(deadline, time.monotonic() + linger)
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def holds_file(pid: int, target: os.stat_result) -> bool:
    """Whether the live process ``pid`` has ``target`` open (a zombie holds nothing)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            info = os.stat(f"{fd_dir}/{name}")
        except OSError:
            continue
        if info.st_ino == target.st_ino and info.st_dev == target.st_dev:
            return True
    return False
