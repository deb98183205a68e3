"""The file tools: file_read, file_write, file_edit. Each takes a path
relative to the conversation's workspace and refuses any other
(``actionq.tools.workspace``)."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from actionq.tools.output import truncate_text
from actionq.tools.registry import ToolContext, tool
from actionq.tools.workspace import open_folder, open_regular_at, resolve_in_workspace

__all__ = [
    "MAX_EDIT_BYTES",
    "FileEditArgs",
    "FileReadArgs",
    "FileWriteArgs",
    "edit_text",
    "numbered_snippet",
    "occurrences",
    "replace_atomically",
    "within_deadline",
]

T = TypeVar("T")

_PATH_HELP = "Path relative to the conversation's workspace (the folder `terminal` runs in)."
# Larger files are for `terminal` (sed, patch): an edit holds the file in memory twice.
MAX_EDIT_BYTES = 16 * 1024 * 1024
_SNIPPET_CONTEXT_LINES = 4


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileReadArgs(_Args):
    path: str = Field(min_length=1, description=_PATH_HELP)
    max_bytes: int = Field(64 * 1024, gt=0, le=16 * 1024 * 1024)


class FileWriteArgs(_Args):
    path: str = Field(min_length=1, description=_PATH_HELP)
    content: str
    append: bool = False


class FileEditArgs(_Args):
    path: str = Field(min_length=1, description=_PATH_HELP + " The file must exist.")
    old_str: str = Field(
        min_length=1,
        description="The exact text to replace, whitespace included. It must occur exactly "
        "once in the file: add surrounding lines until it does.",
    )
    new_str: str = Field(description="The text to put in its place (empty: delete old_str).")


def within_deadline(timeout: float, what: str, work: Callable[[], T]) -> T:
    """Run ``work`` with a deadline: storage that hangs (a dead network mount)
    errors the action instead of holding the worker until the hard limit (the
    stuck thread is left behind; it holds nothing the next action needs)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=run, name="actionq-file-tool", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} took longer than {timeout:g}s")
    if failure:
        raise failure[0]
    return result[0]


def _locate(ctx: ToolContext, path: str) -> tuple[Path, Path]:
    """The workspace (resolved) and the checked target of ``path`` in it."""
    root = ctx.workdir.resolve()
    return root, resolve_in_workspace(root, path, ctx.protected_paths)


@tool("file_read", FileReadArgs, risk="LOW")
def run_file_read(args: FileReadArgs, ctx: ToolContext) -> dict[str, Any]:
    """Read a text file from the workspace."""
    root, target = _locate(ctx, args.path)

    def read() -> bytes:
        with open_folder(root, target.parent, args.path) as dir_fd:
            fd = open_regular_at(dir_fd, target.name, args.path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return f.read(args.max_bytes + 1)

    data = within_deadline(ctx.file_timeout, f"reading {args.path!r}", read)
    text = data[: args.max_bytes].decode("utf-8", "replace")
    text, cut = truncate_text(text, ctx.max_output_bytes)
    return {"path": args.path, "content": text, "truncated": cut or len(data) > args.max_bytes}


@tool("file_write", FileWriteArgs, risk="MEDIUM")
def run_file_write(args: FileWriteArgs, ctx: ToolContext) -> dict[str, Any]:
    """Write (or append to) a text file in the workspace; missing folders are made."""
    root, target = _locate(ctx, args.path)
    data = args.content.encode("utf-8")

    def write() -> None:
        with open_folder(root, target.parent, args.path, create=True) as dir_fd:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if args.append else 0)
            fd = open_regular_at(dir_fd, target.name, args.path, flags)
        with os.fdopen(fd, "wb") as f:
            if not args.append:
                f.truncate(0)  # only now that it is known to be a regular file
            f.write(data)

    within_deadline(ctx.file_timeout, f"writing {args.path!r}", write)
    return {"path": args.path, "bytes_written": len(data)}


def occurrences(text: str, old: str) -> list[int]:
    """Where ``old`` starts in ``text``, overlapping ones too ('aa' is twice in 'aaa')."""
    found = []
    at = text.find(old)
    while at != -1:
        found.append(at)
        at = text.find(old, at + 1)
    return found


def edit_text(text: str, old: str, new: str, path: str) -> tuple[str, int]:
    """``text`` with its one occurrence of ``old`` replaced by ``new``, and the
    line (from 1) where it was. Zero or several occurrences are a
    ``ValueError`` that says how many (and on which lines)."""
    if old == new:
        raise ValueError("old_str and new_str are the same; nothing to change")
    found = occurrences(text, old)
    if not found:
        raise ValueError(
            f"old_str does not occur in {path!r}; nothing was changed. It must match the "
            "file exactly, whitespace and indentation included: read the file with file_read "
            "and copy the text from it"
        )
    if len(found) > 1:
        lines = sorted({text.count("\n", 0, at) + 1 for at in found})
        shown = ", ".join(str(n) for n in lines[:20]) + (", ..." if len(lines) > 20 else "")
        raise ValueError(
            f"old_str occurs {len(found)} times in {path!r} (lines {shown}); nothing was "
            "changed. Include more of the surrounding lines in old_str so that it occurs "
            "exactly once"
        )
    at = found[0]
    return text[:at] + new + text[at + len(old) :], text.count("\n", 0, at) + 1


def numbered_snippet(text: str, first_line: int, new: str) -> str:
    """The edited lines with a few around them, numbered (as ``cat -n``)."""
    lines = text.split("\n")
    start = max(first_line - 1 - _SNIPPET_CONTEXT_LINES, 0)
    end = min(first_line + new.count("\n") + _SNIPPET_CONTEXT_LINES, len(lines))
    return "\n".join(f"{n + 1:6}\t{lines[n]}" for n in range(start, end))


def replace_atomically(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write a new file beside ``name`` and rename it over ``name``: a reader
    (or a crash) sees the old content or the new, never half of it."""
    temp = f".actionq-edit-{uuid.uuid4().hex[:12]}.tmp"  # short: ``name`` may be 255 bytes
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)  # the rename itself survives a power loss


@tool("file_edit", FileEditArgs, risk="MEDIUM")
def run_file_edit(args: FileEditArgs, ctx: ToolContext) -> dict[str, Any]:
    """Replace text in an existing file of the workspace: old_str, which must occur
    exactly once (else nothing changes and the error says how often it occurs),
    becomes new_str. The file is replaced atomically and keeps its mode."""
    root, target = _locate(ctx, args.path)

    def edit() -> tuple[str, int]:
        with open_folder(root, target.parent, args.path) as dir_fd:
            fd = open_regular_at(dir_fd, target.name, args.path, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                data = f.read(MAX_EDIT_BYTES + 1)
            if len(data) > MAX_EDIT_BYTES:
                raise ValueError(
                    f"{args.path!r} is larger than {MAX_EDIT_BYTES} bytes, too large for "
                    "file_edit; change it with a terminal command (sed, patch)"
                )
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{args.path!r} is not UTF-8 text (byte {e.start}); file_edit changes "
                    "text files only"
                ) from None
            edited, line = edit_text(text, args.old_str, args.new_str, args.path)
            replace_atomically(dir_fd, target.name, edited.encode("utf-8"), mode)
        return edited, line

    edited, line = within_deadline(ctx.file_timeout, f"editing {args.path!r}", edit)
    snippet, _ = truncate_text(numbered_snippet(edited, line, args.new_str), ctx.max_output_bytes)
    return {"path": args.path, "line": line, "snippet": snippet}
