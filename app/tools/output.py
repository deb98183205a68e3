"""Bounded capture of a subprocess's output: the head and the tail are kept,
the middle is replaced by a visible marker, and memory stays O(cap)."""

from __future__ import annotations

import os
import selectors
import time
from collections import deque
from typing import IO

__all__ = ["BoundedOutput", "read_bounded", "truncate_text"]

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


def truncate_text(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    out = BoundedOutput(max_bytes)
    out.feed(data)
    return out.text(), True
