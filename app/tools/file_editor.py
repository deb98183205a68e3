"""The file_editor tool: OpenHands' FileEditorTool (its name, arguments and
observation fields) on the conversation's workspace.

Commands: ``view`` (a file, numbered as ``cat -n``; a folder, 2 levels deep,
no hidden entries), ``create`` (a new file only), ``str_replace`` (``old_str``
must occur exactly once), ``insert`` (after line ``insert_line``, 0 = the
top) and ``undo_edit`` (the file as it was before its last ``str_replace`` or
``insert``; again, before the one before, up to ``UNDO_DEPTH``).

Paths are relative to the workspace, or absolute inside it; anything else is
refused as by the other file tools (``actionq.tools.workspace``: a
``WorkspaceError``, an ``AgentErrorEvent``). A mistake the model can correct
(old_str not found or not unique, create over an existing file, a path that
does not exist, a missing parameter) is not an exception: it is an
observation with ``is_error`` true and the reason in ``output``, as OpenHands
does, so the model reads it and tries again.

The undo history is kept in the workspace itself (``.actionq-undo/``, one
folder per file, the last ``UNDO_DEPTH`` contents): each call may run on
another worker, so a history in memory would be lost between calls.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actionq.tools.files import (
    MAX_EDIT_BYTES,
    occurrences,
    replace_atomically,
    within_deadline,
)
from actionq.tools.output import truncate_text
from actionq.tools.registry import ToolContext, tool
from actionq.tools.workspace import (
    WorkspaceError,
    open_folder,
    open_regular_at,
    resolve_in_workspace,
)

__all__ = ["UNDO_DEPTH", "UNDO_FOLDER", "FileEditorArgs", "run_file_editor"]

Command = Literal["view", "create", "str_replace", "insert", "undo_edit"]
UNDO_FOLDER = ".actionq-undo"
UNDO_DEPTH = 10  # contents kept per file (OpenHands keeps 10 too)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SNIPPET_CONTEXT_LINES = 4  # OpenHands' SNIPPET_CONTEXT_WINDOW
_NODE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
_CLIPPED_NOTE = (
    "<response clipped><NOTE>Only part of this file is shown. Find the line numbers you "
    "need with `grep -n` in the terminal, then view them with `view_range`.</NOTE>"
)

_DESCRIPTION = """\
View, create and edit plain-text files in your workspace.
* `view`: on a file, shows it numbered as `cat -n` (`view_range` [start, end], from 1, \
end -1 = to the end, shows part of it); on a folder, lists its files and folders up to \
2 levels deep, hidden ones left out.
* `create`: makes a new file with `file_text` (missing folders are made); it never \
overwrites an existing file.
* `str_replace`: replaces `old_str` with `new_str` (empty or left out: deletes it). \
`old_str` must match EXACTLY one place in the file, whitespace and indentation included: \
copy it from `view`, and add surrounding lines until it is unique.
* `insert`: puts `new_str` as new lines AFTER line `insert_line` (0: at the top).
* `undo_edit`: restores the file as it was before its last edit by this tool.
* `path`: relative to your workspace (the folder `terminal` runs in), or absolute inside \
it; `view` of `.` lists the workspace and shows its absolute path.
* A long output is cut and marked. A mistake (text not found, a file that exists) is \
reported in the result: read it, and correct the call."""


class FileEditorArgs(BaseModel):
    """OpenHands' FileEditorAction: every argument but ``command`` and ``path``
    is optional in the schema and checked per command (a missing one is an
    ``is_error`` observation that says which)."""

    model_config = ConfigDict(extra="forbid")

    command: Command = Field(
        description="The command to run: `view`, `create`, `str_replace`, `insert` or `undo_edit`."
    )
    path: str = Field(
        min_length=1,
        description="Path of the file or folder: relative to the workspace, or absolute inside it.",
    )
    file_text: str | None = Field(
        None, description="Required by `create`: the content of the new file."
    )
    old_str: str | None = Field(
        None, description="Required by `str_replace`: the exact text to replace."
    )
    new_str: str | None = Field(
        None,
        description="`str_replace`: the text to put in place of `old_str` (left out: "
        "nothing, i.e. delete it). Required by `insert`: the text to insert.",
    )
    insert_line: int | None = Field(
        None,
        ge=0,
        description="Required by `insert`: `new_str` goes AFTER this line (0: at the top).",
    )
    view_range: list[int] | None = Field(
        None,
        description="Optional for `view` of a file: [start, end], lines from 1; end -1 "
        "shows to the end of the file.",
    )


class EditorError(Exception):
    """A mistake the model can correct: returned as an ``is_error``
    observation (OpenHands' ToolError), never raised out of the tool."""

    def __init__(self, message: str, *, prev_exist: bool = True) -> None:
        super().__init__(message)
        self.prev_exist = prev_exist


@dataclass(frozen=True)
class _Target:
    root: Path  # the workspace, resolved
    path: Path  # resolved (symlinks inside the workspace followed)
    shown: str  # what the model and the client see: absolute, not resolved

    @property
    def is_root(self) -> bool:
        return self.path == self.root

    @property
    def history_key(self) -> str:
        """One undo folder per file, whatever alias (symlink) named it."""
        rel = self.path.relative_to(self.root).as_posix()
        return hashlib.sha256(rel.encode()).hexdigest()[:32]


def _target(ctx: ToolContext, path: str) -> _Target:
    """Where ``path`` leads, refused (``WorkspaceError``) outside the workspace."""
    root = ctx.workdir.resolve()
    root_text = str(root)
    rel = path
    if os.path.isabs(path):
        if path.rstrip("/") == root_text:
            rel = "."
        elif path.startswith(root_text + "/"):
            rel = path[len(root_text) + 1 :].lstrip("/") or "."
        else:
            raise WorkspaceError(
                f"path {path!r} is outside this conversation's workspace {root_text}; give a "
                f"path inside it (absolute, starting with {root_text}/, or relative to it)"
            )
    if "\0" not in rel and os.path.normpath(rel) == ".":
        return _Target(root, root, root_text)
    resolved = resolve_in_workspace(root, rel, ctx.protected_paths)
    return _Target(root, resolved, os.path.normpath(os.path.join(root_text, rel)))


# --- reading ------------------------------------------------------------------------


@contextlib.contextmanager
def _parent(target: _Target, create: bool = False) -> Iterator[int]:
    """A descriptor of the target's folder; a missing one is an ``EditorError``."""
    try:
        with open_folder(target.root, target.path.parent, target.shown, create) as dir_fd:
            yield dir_fd
    except FileNotFoundError:
        raise _missing(target) from None


def _missing(target: _Target) -> EditorError:
    return EditorError(
        f"Invalid `path` parameter: {target.shown}. The path {target.shown} does not exist. "
        "Please provide a valid path.",
        prev_exist=False,
    )


def _open_node(dir_fd: int, name: str, target: _Target) -> tuple[int, bool]:
    """``name`` in ``dir_fd`` opened without following a symlink nor blocking
    on a FIFO: its descriptor and whether it is a folder. Anything but a
    regular file or a folder is refused."""
    try:
        fd = os.open(name, _NODE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise _missing(target) from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink swapped in after the check
            raise WorkspaceError(f"path {target.shown!r} is not a regular file") from None
        raise
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        os.set_blocking(fd, True)
        return fd, stat.S_ISDIR(mode)
    os.close(fd)
    raise WorkspaceError(f"path {target.shown!r} is not a regular file")


def _decode(data: bytes, target: _Target) -> str:
    if len(data) > MAX_EDIT_BYTES:
        raise EditorError(
            f"File validation failed for {target.shown}: it is larger than "
            f"{MAX_EDIT_BYTES // 2**20} MiB, too large for this tool. Use the terminal "
            "(grep, sed, head) instead."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise EditorError(
            f"File validation failed for {target.shown}: it appears to be binary (not UTF-8 "
            "text); this tool views and edits text files only."
        )
    return text


def _read_fd(fd: int, target: _Target) -> tuple[str, int]:
    """The text of an open regular file, and its mode."""
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        data = f.read(MAX_EDIT_BYTES + 1)
    return _decode(data, target), mode


def _read_file(dir_fd: int, target: _Target) -> tuple[str, int]:
    """The text of the target file and its mode; a folder is an ``EditorError``."""
    fd, is_dir = _open_node(dir_fd, target.path.name, target)
    if is_dir:
        os.close(fd)
        raise _folder_refused(target)
    return _read_fd(fd, target)


def _folder_refused(target: _Target) -> EditorError:
    return EditorError(
        f"Invalid `path` parameter: {target.shown}. The path {target.shown} is a directory "
        "and only the `view` command can be used on directories."
    )


def _lines(text: str) -> list[str]:
    """The lines of ``text`` with their ends, split at '\\n' only (as the line
    numbers of `view`, `grep -n` and `insert_line` count them)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _numbered(lines: list[str], first: int) -> str:
    """``lines`` numbered from ``first``, as ``cat -n`` shows them."""
    bare = [line.removesuffix("\n") for line in lines]
    return "\n".join(f"{first + i:6}\t{line}" for i, line in enumerate(bare))


def _snippet(text: str, first_line: int, inserted: str) -> str:
    """The lines from ``first_line`` that hold ``inserted``, with
    ``_SNIPPET_CONTEXT_LINES`` around them, numbered."""
    lines = _lines(text)
    start = max(first_line - 1 - _SNIPPET_CONTEXT_LINES, 0)
    end = min(first_line + inserted.count("\n") + _SNIPPET_CONTEXT_LINES, len(lines))
    return _numbered(lines[start:end], start + 1)


def _clip(text: str, ctx: ToolContext, note: str = "") -> str:
    clipped, cut = truncate_text(text, ctx.max_output_bytes)
    return clipped + ("\n" + note if cut and note else "")


# --- the commands ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    output: str
    prev_exist: bool = True
    old_content: str | None = None
    new_content: str | None = None


def _view(args: FileEditorArgs, ctx: ToolContext, target: _Target) -> _Result:
    if target.is_root:
        fd = os.open(target.root, _DIR_FLAGS)
        return _view_folder(fd, args, ctx, target)
    with _parent(target) as dir_fd:
        fd, is_dir = _open_node(dir_fd, target.path.name, target)
    if is_dir:
        return _view_folder(fd, args, ctx, target)
    text, _ = _read_fd(fd, target)
    lines = _lines(text)
    start, end, note = 1, len(lines), ""
    if args.view_range is not None:
        start, end, note = _checked_range(args.view_range, len(lines))
    numbered = _numbered(lines[start - 1 : end], start)
    output = f"Here's the result of running `cat -n` on {target.shown}:\n{numbered}\n"
    return _Result(note + _clip(output, ctx, _CLIPPED_NOTE))


def _checked_range(view_range: list[int], count: int) -> tuple[int, int, str]:
    """``view_range`` as (start, end) lines and a note, or an ``EditorError``."""
    shown = str(view_range)
    if len(view_range) != 2:
        raise EditorError(
            f"Invalid `view_range` parameter: {shown}. It should be a list of two integers."
        )
    start, end = view_range
    if not 1 <= start <= count:
        raise EditorError(
            f"Invalid `view_range` parameter: {shown}. Its first element `{start}` should be "
            f"within the range of lines of the file: [1, {count}]."
        )
    note = ""
    if end == -1:
        end = count
    elif end > count:
        note = f"NOTE: We only show up to {count} since there're only {count} lines in this file.\n"
        end = count
    if end < start:
        raise EditorError(
            f"Invalid `view_range` parameter: {shown}. Its second element `{end}` should be "
            f"greater than or equal to the first element `{start}`."
        )
    return start, end, note


def _subfolder(fd: int, name: str) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError:  # unreadable, or swapped for something else meanwhile: not listed
        return None


def _visible(fd: int) -> tuple[list[tuple[str, bool]], int]:
    """The entries of the folder ``fd`` that are not hidden (name, is a real
    folder: symlinks are listed, never followed) and how many are hidden."""
    with os.scandir(fd) as entries:
        listed = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
    visible = [(name, is_dir) for name, is_dir in listed if not name.startswith(".")]
    return visible, len(listed) - len(visible)


def _view_folder(fd: int, args: FileEditorArgs, ctx: ToolContext, target: _Target) -> _Result:
    """OpenHands' listing: the folder, its entries and theirs (2 levels), absolute."""
    try:
        if args.view_range is not None:
            raise EditorError(
                f"Invalid `view_range` parameter: {args.view_range}. The `view_range` "
                "parameter is not allowed when `path` points to a directory."
            )
        top = target.shown.rstrip("/")
        shown = [f"{top}/"]
        visible, hidden = _visible(fd)
        for name, is_dir in visible:
            shown.append(f"{top}/{name}/" if is_dir else f"{top}/{name}")
            sub = _subfolder(fd, name) if is_dir else None
            if sub is None:
                continue
            try:
                children, _ = _visible(sub)
            finally:
                os.close(sub)
            shown += [f"{top}/{name}/{child}" + ("/" if d else "") for child, d in children]
    finally:
        os.close(fd)
    output = (
        f"Here's the files and directories up to 2 levels deep in {target.shown}, excluding "
        "hidden items:\n" + "\n".join(shown)
    )
    if hidden:
        output += (
            f"\n\n{hidden} hidden files/directories in this directory are excluded. You can "
            f"use 'ls -la {target.shown}' to see them."
        )
    return _Result(_clip(output, ctx))


def _create(args: FileEditorArgs, ctx: ToolContext, target: _Target) -> _Result:
    if args.file_text is None:
        raise _parameter_missing("create", "file_text")
    exists = EditorError(
        f"Invalid `path` parameter: {target.shown}. File already exists at: {target.shown}. "
        "Cannot overwrite files using command `create`."
    )
    if target.is_root:
        raise exists
    with _parent(target, create=True) as dir_fd:
        _link_new(dir_fd, target.path.name, args.file_text.encode("utf-8"), exists)
    # A file made anew has no past here: an old history would undo to another file's text.
    _drop_history(target)
    return _Result(f"File created successfully at: {target.shown}", False, None, args.file_text)


def _link_new(dir_fd: int, name: str, data: bytes, exists: EditorError) -> None:
    """Write ``data`` to a new file ``name``, whole or not at all: written
    beside it, then hard-linked in place, which fails if ``name`` exists."""
    temp = f".actionq-edit-{uuid.uuid4().hex[:12]}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o666, dir_fd=dir_fd)  # the umask decides, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            raise exists from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
    os.fsync(dir_fd)


def _parameter_missing(command: str, parameter: str) -> EditorError:
    hints = {
        "old_str": "View the file and copy `old_str` from it exactly, whitespace included.",
        "file_text": "`create` makes a NEW file with `file_text` as its content; to change "
        "an existing one use `str_replace` or `insert`.",
        "insert_line": "`new_str` goes AFTER line `insert_line` (0: at the top); view the "
        "file to pick it.",
        "new_str": "Give the text to insert as `new_str`.",
    }
    return EditorError(
        f"Parameter `{parameter}` is required for command: {command}.\n\nHint: {hints[parameter]}"
    )


def _edit(target: _Target, ctx: ToolContext, change: Callable[[str], tuple[str, str]]) -> _Result:
    """Read the file, ``change`` its text (the new text and the message), keep
    the old text for `undo_edit`, and replace the file atomically (its mode kept)."""
    if target.is_root:
        raise _folder_refused(target)
    with _parent(target) as dir_fd:
        old, mode = _read_file(dir_fd, target)
        new, message = change(old)
        _push_history(target, old.encode("utf-8"))
        replace_atomically(dir_fd, target.path.name, new.encode("utf-8"), mode)
    return _Result(_clip(message, ctx), True, old, new)


def _str_replace(args: FileEditorArgs, ctx: ToolContext, target: _Target) -> _Result:
    old_str = args.old_str
    if old_str is None:
        raise _parameter_missing("str_replace", "old_str")
    new_str = args.new_str or ""
    if not old_str:
        raise EditorError("Invalid `old_str` parameter: it is empty. Give the text to replace.")
    if new_str == old_str:
        raise EditorError(
            "Invalid `new_str` parameter: it is the same as `old_str`. No replacement was "
            "performed: `new_str` and `old_str` must be different."
        )

    def change(text: str) -> tuple[str, str]:
        found = occurrences(text, old_str)
        if not found:
            raise EditorError(
                f"No replacement was performed, old_str `{old_str}` did not appear verbatim in "
                f"{target.shown}. View the file and copy the text exactly, whitespace and "
                "indentation included."
            )
        if len(found) > 1:
            lines = sorted({text.count("\n", 0, at) + 1 for at in found})
            raise EditorError(
                f"No replacement was performed. Multiple occurrences of old_str `{old_str}` in "
                f"lines {lines}. Please ensure it is unique: include more of the lines around it."
            )
        at = found[0]
        new = text[:at] + new_str + text[at + len(old_str) :]
        snippet = _snippet(new, text.count("\n", 0, at) + 1, new_str)
        return new, (
            f"The file {target.shown} has been edited. Here's the result of running `cat -n` "
            f"on a snippet of {target.shown}:\n{snippet}\nReview the changes and make sure "
            "they are as expected. Edit the file again if necessary."
        )

    return _edit(target, ctx, change)


def _insert(args: FileEditorArgs, ctx: ToolContext, target: _Target) -> _Result:
    line, new_str = args.insert_line, args.new_str
    if line is None:
        raise _parameter_missing("insert", "insert_line")
    if new_str is None:
        raise _parameter_missing("insert", "new_str")
    block = new_str if new_str.endswith("\n") else new_str + "\n"

    def change(text: str) -> tuple[str, str]:
        lines = _lines(text)
        if line > len(lines):
            raise EditorError(
                f"Invalid `insert_line` parameter: {line}. It should be within the range of "
                f"allowed values: [0, {len(lines)}]"
            )
        before = "".join(lines[:line])
        if before and not before.endswith("\n"):
            before += "\n"  # the last line had no end: the new ones start on their own
        new = before + block + "".join(lines[line:])
        snippet = _snippet(new, line + 1, block[:-1])
        return new, (
            f"The file {target.shown} has been edited. Here's the result of running `cat -n` "
            f"on a snippet of the edited file:\n{snippet}\nReview the changes and make sure "
            "they are as expected (correct indentation, no duplicate lines, etc). Edit the "
            "file again if necessary."
        )

    return _edit(target, ctx, change)


def _undo_edit(args: FileEditorArgs, ctx: ToolContext, target: _Target) -> _Result:
    if target.is_root:
        raise _folder_refused(target)
    none = EditorError(f"No edit history found for {target.shown}.")
    with _parent(target) as dir_fd:
        current, mode = _read_file(dir_fd, target)
        try:
            with _history(target, create=False) as history:
                entries = _entries(history)
                if not entries:
                    raise none
                fd = open_regular_at(history, entries[-1], UNDO_FOLDER, os.O_RDONLY)
                previous, _ = _read_fd(fd, target)
                replace_atomically(dir_fd, target.path.name, previous.encode("utf-8"), mode)
                # Dropped once the file is back: a crash before leaves one more undo of the same.
                os.unlink(entries[-1], dir_fd=history)
        except FileNotFoundError:  # no undo folder: never edited by this tool
            raise none from None
    numbered = _numbered(_lines(previous), 1)
    output = (
        f"Last edit to {target.shown} undone successfully. Here's the result of running "
        f"`cat -n` on {target.shown}:\n{numbered}\n"
    )
    return _Result(_clip(output, ctx, _CLIPPED_NOTE), True, current, previous)


# --- the undo history ------------------------------------------------------------------


@contextlib.contextmanager
def _history(target: _Target, create: bool = True) -> Iterator[int]:
    """The file's undo folder (made if missing and ``create``), opened as the
    file tools open folders: a symlink planted in its place is refused, not
    followed."""
    folder = target.root / UNDO_FOLDER / target.history_key
    with open_folder(target.root, folder, f"{UNDO_FOLDER}/{target.history_key}", create) as fd:
        yield fd


def _entries(history: int) -> list[str]:
    """The saved contents, oldest first (names are zero-padded counters)."""
    return sorted(name for name in os.listdir(history) if name.isdigit())


def _push_history(target: _Target, content: bytes) -> None:
    with _history(target) as history:
        entries = _entries(history)
        number = int(entries[-1]) + 1 if entries else 1
        replace_atomically(history, f"{number:08d}", content, 0o600)
        for old in entries[: max(len(entries) + 1 - UNDO_DEPTH, 0)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old, dir_fd=history)


def _drop_history(target: _Target) -> None:
    try:
        with _history(target, create=False) as history:
            for name in _entries(history):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=history)
    except FileNotFoundError:
        pass  # never edited: nothing to forget


# --- the tool --------------------------------------------------------------------------

_COMMANDS: dict[str, Callable[[FileEditorArgs, ToolContext, _Target], _Result]] = {
    "view": _view,
    "create": _create,
    "str_replace": _str_replace,
    "insert": _insert,
    "undo_edit": _undo_edit,
}


def _fits(content: str | None, limit: int) -> bool:
    return content is None or (len(content) <= limit and len(content.encode("utf-8")) <= limit)


@tool(
    "file_editor",
    FileEditorArgs,
    _DESCRIPTION,
    risk="MEDIUM",
    model_omits=("old_content", "new_content"),
)
def run_file_editor(args: FileEditorArgs, ctx: ToolContext) -> dict[str, Any]:
    """OpenHands' file_editor: view, create, str_replace, insert, undo_edit."""
    target = _target(ctx, args.path)
    try:
        result = within_deadline(
            ctx.file_timeout,
            f"file_editor {args.command} of {target.shown!r}",
            lambda: _COMMANDS[args.command](args, ctx, target),
        )
    except EditorError as e:  # the message may quote old_str, which may be long
        result = _Result(_clip(str(e), ctx), e.prev_exist)
        is_error = True
    else:
        is_error = False
    old, new = result.old_content, result.new_content
    # The whole file before and after is for a client's diff; past the output
    # cap it is left out (None) rather than stored twice in every event.
    if not (_fits(old, ctx.max_output_bytes) and _fits(new, ctx.max_output_bytes)):
        old = new = None
    return {
        "command": args.command,
        "path": target.shown,
        "prev_exist": result.prev_exist,
        "old_content": old,
        "new_content": new,
        "output": result.output,
        "is_error": is_error,
    }
