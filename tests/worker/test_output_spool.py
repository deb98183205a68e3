"""The output spool of a terminal command (actionq.tools.spool), with real
subprocesses writing to it."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from actionq.crashes.causes import agent_error_event, with_output_tail
from actionq.models import ActionRecord, ActionState, ErrorCause
from actionq.tools.spool import (
    OutputSpool,
    decode_tail,
    follow_until_exit,
    read_spool_tail,
    spool_folder,
    spool_path,
)


def run(spool: OutputSpool, command: str, timeout: float = 30.0) -> tuple[bytes, bool]:
    proc = subprocess.Popen(
        ["bash", "-c", command], stdout=spool.write_fd, stderr=subprocess.STDOUT
    )
    try:
        out, timed_out = follow_until_exit(
            spool, 1 << 20, time.monotonic() + timeout, proc.pid, 0.5, lambda: False
        )
    finally:
        proc.kill()
        proc.wait()
    return out.text().encode(), timed_out


def test_a_command_printing_a_lot_keeps_only_about_a_mebibyte_on_disk(tmp_path: Path) -> None:
    spool = OutputSpool(spool_path(spool_folder(str(tmp_path), create=True), "a1"), 2048)
    try:
        text, timed_out = run(spool, "head -c 200000000 /dev/zero | tr '\\0' a; echo END")
        assert not timed_out and text.endswith(b"aEND\n")
        info = os.stat(spool.path)
        assert info.st_size == 200_000_004
        if spool.punch_failed:
            pytest.skip("this file system cannot punch holes")
        assert info.st_blocks * 512 <= 2 << 20  # 200 MB written, at most 2 MiB held
        assert read_spool_tail(spool.path, 6) == b"aaEND\n"  # the tail is still there
    finally:
        spool.close_and_remove()
    assert not spool.path.exists()


def test_the_spool_folder_and_file_are_the_users_only(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    spool_folder(str(folder), create=True)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    spool = OutputSpool(spool_path(folder, "a1"), 2048)
    try:
        assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
        with pytest.raises(FileExistsError):  # never a file someone left there
            OutputSpool(spool_path(folder, "a1"), 2048)
    finally:
        spool.close_and_remove()
    link = tmp_path / "link"
    link.symlink_to(folder)
    with pytest.raises(PermissionError):
        spool_folder(str(link), create=True)


def test_a_tail_that_starts_inside_a_character_drops_it() -> None:
    assert decode_tail("é-ok".encode()[1:]) == "-ok"
    assert decode_tail(b"\xff-x") == "\ufffd-x"


def test_the_error_text_ends_with_the_fenced_tail() -> None:
    action = ActionRecord(
        id="a1", conversation_id="c1", state=ActionState.CLAIMED, tool="terminal",
        arguments={}, tool_call_id="t1", fingerprint="", created_at="",
    )  # fmt: skip
    event = agent_error_event(action, ErrorCause.WORKER_LOST, how="signal 9", output_tail="x\ny")
    assert event.detail.output_tail == "x\ny"
    assert event.error.endswith(with_output_tail("x\ny"))
    assert event.error.endswith("\n\nLast output before the crash:\n-----\nx\ny\n-----")
    plain = agent_error_event(action, ErrorCause.WORKER_LOST, how="signal 9")
    assert "Last output" not in plain.error and plain.detail.output_tail is None
