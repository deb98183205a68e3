"""Bounded capture of a subprocess's output: the head and the tail are kept,
the middle is replaced by a visible marker, and memory stays O(cap)."""

from __future__ import annotations

import os
import selectors
import time
from collections import deque
from typing import IO

__all__ = ["BoundedOutput", "read_bounded", "read_until_exit", "truncate_text"]

TRUNCATION_MARKER = "\n[... actionq: {skipped} bytes of output truncated ...]\n"


class BoundedOutput:
    def __init__(self, max_bytes: int) -> None:
        self.head_cap = max_bytes // 2
        self.tail_cap = max_bytes - self.head_cap
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail and self.tail_size - len(self.tail[0]) >= self.tail_cap:
            self.tail_size -= len(self.tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + self.tail_size or self.tail_size > self.tail_cap

    def text(self) -> str:
        tail = b"".join(self.tail)
        if len(tail) > self.tail_cap:
            tail = tail[len(tail) - self.tail_cap :]
        skipped = self.total - len(self.head) - len(tail)
        head_text = self.head.decode("utf-8", "replace")
        tail_text = tail.decode("utf-8", "replace")
        if skipped <= 0:
            return head_text + tail_text
        return head_text + TRUNCATION_MARKER.format(skipped=skipped) + tail_text


def read_bounded(stream: IO[bytes], max_bytes: int, deadline: float) -> tuple[BoundedOutput, bool]:
    """Read ``stream`` to EOF or until ``deadline`` (monotonic). Returns the
    output and whether the deadline passed first."""
    out = BoundedOutput(max_bytes)
    fd = stream.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out, True
            if not sel.select(timeout=min(remaining, 1.0)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return out, False
            out.feed(chunk)


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when ``pid`` exits (Linux 5.3+), else None."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return int(pidfd_open(pid))
    except OSError:
        return None


def _has_exited(pid: int) -> bool:
    """Without reaping it (its pid, and so its process group, stays taken)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def read_until_exit(
    stream: IO[bytes], max_bytes: int, deadline: float, pid: int, linger: float
) -> tuple[BoundedOutput, bool]:
    """Read a command's output until it has exited and the output ended, or
    ``linger`` seconds after it exited (a background child may hold the pipe
    open for ever), or until ``deadline``. Returns the output and whether the
    deadline passed first. ``pid`` (a child of this process) is not reaped,
    so the caller can still kill its process group safely."""
    out = BoundedOutput(max_bytes)
    out_fd = stream.fileno()
    exit_fd = _pidfd(pid)
    tick = 1.0 if exit_fd is not None else 0.02  # without a pidfd: poll
    stop_at = deadline
    eof = exited = False
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(out_fd, selectors.EVENT_READ)
            if exit_fd is not None:
                sel.register(exit_fd, selectors.EVENT_READ)
            while not (eof and exited):
                if not exited and (exit_fd is None and _has_exited(pid)):
                    exited, stop_at = True, min(deadline, time.monotonic() + linger)
                remaining = stop_at - time.monotonic()
                if remaining <= 0:
                    return out, not exited
                for key, _ in sel.select(timeout=min(remaining, tick)):
                    if key.fd == out_fd:
                        chunk = os.read(out_fd, 65536)
                        if chunk:
                            out.feed(chunk)
                        else:
                            eof = True
                            sel.unregister(out_fd)
                    else:
                        exited, stop_at = True, min(deadline, time.monotonic() + linger)
                        sel.unregister(key.fd)
            return out, False
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def truncate_text(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    out = BoundedOutput(max_bytes)
    out.feed(data)
    return out.text(), True
