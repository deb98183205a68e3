"""Bounded output (actionq.tools.output): at most ``max_bytes`` of a command's
output are kept, its head and its tail, with a visible marker saying how many
bytes were cut; limits are in bytes of UTF-8, and a character cut in two never
breaks the text."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest

from actionq.tools.output import TRUNCATION_MARKER, BoundedOutput, read_bounded, truncate_text


def marker(skipped: int) -> str:
    return TRUNCATION_MARKER.format(skipped=skipped)


# --- truncate_text ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "short", "x" * 100])
def test_text_within_the_limit_is_kept_as_it_is(text: str) -> None:
    assert truncate_text(text, 100) == (text, False)


def test_one_byte_over_keeps_head_and_tail_around_the_marker() -> None:
    text = "a" * 50 + "M" + "z" * 50  # 101 bytes, limit 100
    assert truncate_text(text, 100) == ("a" * 50 + marker(1) + "z" * 50, True)


def test_the_middle_is_cut_and_the_marker_counts_its_bytes() -> None:
    text = "H" * 1000 + "m" * 8000 + "T" * 1000
    cut, truncated = truncate_text(text, 2000)
    assert truncated
    assert cut == "H" * 1000 + marker(8000) + "T" * 1000
    assert "[... actionq: 8000 bytes of output truncated ...]" in cut


def test_an_odd_limit_gives_the_extra_byte_to_the_tail() -> None:
    cut, _ = truncate_text("h" * 10 + "t" * 10, 5)
    assert cut == "hh" + marker(15) + "ttt"


def test_the_limit_counts_bytes_not_characters() -> None:
    text = "é" * 60  # 60 characters, 120 bytes
    cut, truncated = truncate_text(text, 100)
    assert truncated
    assert cut == "é" * 25 + marker(20) + "é" * 25


@pytest.mark.parametrize(
    ("char", "limit", "head", "tail", "skipped"),
    [
        # 2-byte é, limit 11: the head gets 5 bytes (2½ characters), the tail 6 (3).
        ("é", 11, "éé\ufffd", "ééé", 189),
        # 4-byte emoji, limit 10: 5 bytes each side, one whole and one cut.
        ("😀", 10, "😀\ufffd", "\ufffd😀", 390),
        # 3-byte CJK, limit 7: head 3 bytes (one whole), tail 4 (a cut one, a whole one).
        ("漢", 7, "漢", "\ufffd漢", 293),
        # limit 9: the tail starts with two stray continuation bytes, one mark each.
        ("漢", 9, "漢\ufffd", "\ufffd\ufffd漢", 291),
    ],
)
def test_a_character_cut_in_two_becomes_replacement_characters(
    char: str, limit: int, head: str, tail: str, skipped: int
) -> None:
    cut, truncated = truncate_text(char * 100, limit)
    assert truncated
    assert cut == head + marker(skipped) + tail
    cut.encode("utf-8")  # valid text: it can be stored and sent as JSON


# --- BoundedOutput: fed in pieces --------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 1000, 100_000])
def test_feeding_in_pieces_gives_what_feeding_at_once_gives(chunk_size: int) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    whole = BoundedOutput(1000)
    whole.feed(data)
    pieces = BoundedOutput(1000)
    for start in range(0, len(data), chunk_size):
        pieces.feed(data[start : start + chunk_size])
    assert pieces.text() == whole.text()
    assert pieces.truncated and pieces.total == len(data)
    assert pieces.head == data[:500]
    assert marker(len(data) - 1000) in pieces.text()


def test_memory_stays_within_the_cap_plus_one_read() -> None:
    out = BoundedOutput(1000)
    for _ in range(2000):
        out.feed(b"x" * 4096)  # 8 MB in all
    assert len(out.head) == 500
    assert out.tail_size < 500 + 4096
    assert out.text() == "x" * 500 + marker(2000 * 4096 - 1000) + "x" * 500


def test_exactly_the_cap_is_not_truncated() -> None:
    out = BoundedOutput(10)
    out.feed(b"0123456789")
    assert (out.text(), out.truncated) == ("0123456789", False)
    out.feed(b"!")
    assert (out.text(), out.truncated) == ("01234" + marker(1) + "6789!", True)


# --- read_bounded: a real pipe ------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb", buffering=0) as reader, os.fdopen(write_fd, "wb") as writer:
        yield reader, writer


def test_read_bounded_reads_to_the_end(pipe: tuple[IO[bytes], IO[bytes]]) -> None:
    reader, writer = pipe
    writer.write("héllo\n".encode())
    writer.close()
    out, timed_out = read_bounded(reader, 100, time.monotonic() + 10)
    assert (out.text(), out.truncated, timed_out) == ("héllo\n", False, False)


def test_read_bounded_keeps_head_and_tail_of_a_large_output(
    pipe: tuple[IO[bytes], IO[bytes]],
) -> None:
    reader, writer = pipe
    size = 4 * 1024 * 1024  # far more than the pipe holds: written while it is read

    def write() -> None:
        writer.write(b"<" + b"." * (size - 2) + b">")
        writer.close()

    writer_thread = threading.Thread(target=write)
    writer_thread.start()
    out, timed_out = read_bounded(reader, 64, time.monotonic() + 30)
    writer_thread.join(10)
    assert not timed_out
    assert out.text() == "<" + "." * 31 + marker(size - 64) + "." * 31 + ">"


def test_read_bounded_stops_at_the_deadline_with_what_it_has(
    pipe: tuple[IO[bytes], IO[bytes]],
) -> None:
    reader, writer = pipe
    writer.write(b"partial")
    writer.flush()  # and the writer stays open: no EOF ever comes
    started = time.monotonic()
    out, timed_out = read_bounded(reader, 100, started + 0.3)
    assert timed_out and out.text() == "partial"
    assert 0.3 <= time.monotonic() - started < 2


def test_read_bounded_with_a_deadline_already_past_reads_nothing(
    pipe: tuple[IO[bytes], IO[bytes]],
) -> None:
    reader, writer = pipe
    writer.write(b"ready")
    writer.flush()
    out, timed_out = read_bounded(reader, 100, time.monotonic() - 1)
    assert timed_out and out.text() == "" and out.total == 0
