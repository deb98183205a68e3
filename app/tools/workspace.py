"""Per-conversation workspaces, and the confinement of the file tools to them.

Each conversation has its own folder ``<workspace root>/<conversation id>``
(``ACTIONQ_WORKDIR``, else the per-user default of
``Settings.workspace_root``): ``terminal`` runs there and the file tools take
paths relative to it and refuse any that leaves it. The root is never
actionq's data folder (keys, passwords); inside the data folder only its
``workspace`` subfolder may hold workspaces (``actionq up``'s layout).

A path is checked twice: resolved (symlinks followed) it must stay inside
the workspace, and it is then opened one component at a time from the
workspace's own descriptor without following any symlink, so one swapped in
after the check is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from actionq.models import conversation_id_problem
from actionq.settings import Settings

__all__ = [
    "WorkspaceError",
    "check_workspace_root",
    "conversation_workspace",
    "open_folder",
    "open_regular_at",
    "resolve_in_workspace",
]

WORKSPACE_MODE = 0o700  # workspaces and the folders made for them: the owner only
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkspaceError(PermissionError):
    """A workspace or a path the tools may not use; the message says what to
    do instead (an LLM reads it in the AgentErrorEvent)."""


@lru_cache(maxsize=8)
def _checked_root(root: Path, data_dir: str | None) -> tuple[str, str | None]:
    """The resolved, checked root and data folder, as strings: once per
    process and setting (every action asks, and resolving costs a system
    call per component)."""
    data = Path(data_dir).expanduser().resolve() if data_dir else None
    return str(check_workspace_root(root, data)), str(data) if data else None


def check_workspace_root(root: Path, data_dir: Path | None) -> Path:
    """``root`` resolved, unless it is actionq's data folder or lies inside it
    elsewhere than in its ``workspace`` subfolder (beside the keys)."""
    root = root.expanduser().resolve()
    if data_dir is None:
        return root
    data = data_dir.expanduser().resolve()
    if root == data:
        raise WorkspaceError(
            f"the workspace root {root} is actionq's data folder, which holds its keys and "
            "passwords; set ACTIONQ_WORKDIR to another folder (`actionq up` uses "
            f"{data / 'workspace'})"
        )
    if root.is_relative_to(data) and not root.is_relative_to(data / "workspace"):
        raise WorkspaceError(
            f"the workspace root {root} is inside actionq's data folder {data}, beside its "
            f"keys; inside it only {data / 'workspace'} may hold workspaces"
        )
    return root


def _make_private_dirs(folder: Path) -> None:
    """``folder`` and each missing parent, 0700 (``os.makedirs`` gives the
    parents the umask's mode). Concurrent workers may race: that is fine."""
    missing = []
    at = folder
    while not os.path.lexists(at) and at != at.parent:
        missing.append(at)
        at = at.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, WORKSPACE_MODE)


def conversation_workspace(settings: Settings, conversation_id: str) -> Path:
    """The conversation's workspace folder, resolved; made (0700, parents
    too) on first use. Raises ``WorkspaceError`` for an id or a root that
    must not be used."""
    problem = conversation_id_problem(conversation_id)
    if problem is not None:
        raise WorkspaceError(f"no workspace for this conversation: {problem}")
    root, data = _checked_root(settings.workspace_root, settings.data_dir)
    # Whatever created the id (an old store, a direct write): exactly one
    # component below the root, never '.', '..' or a path. (Strings, not
    # Paths: this runs for every action.)
    folder = os.path.join(root, conversation_id)
    if os.path.dirname(folder) != root or conversation_id in (".", ".."):
        raise WorkspaceError(f"conversation id {conversation_id!r} is not a folder name")
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        _make_private_dirs(Path(folder))
        mode = os.lstat(folder).st_mode
    if not stat.S_ISDIR(mode):
        # A symlink planted there (by a command of another conversation, say)
        # would hand this conversation's file tools another folder.
        raise WorkspaceError(
            f"the workspace {folder} is not a folder (a symlink or a file is in its place); "
            "remove it"
        )
    if data is not None and (data == folder or data.startswith(folder + os.sep)):
        raise WorkspaceError(
            f"the workspace {folder} holds actionq's data folder {data} (keys, passwords); "
            "set ACTIONQ_WORKDIR to a folder that does not contain it"
        )
    return Path(folder)


def resolve_in_workspace(workspace: Path, path: str, protected: tuple[Path, ...] = ()) -> Path:
    """The resolved path of ``path`` (relative to ``workspace``), refused
    unless it stays inside the workspace and outside every ``protected``
    folder (actionq's data folder), except where the workspace itself lies
    within that folder."""
    if "\0" in path:
        raise WorkspaceError(f"path {path!r} holds a NUL character; give a plain relative path")
    if os.path.isabs(path):
        raise WorkspaceError(
            f"path {path!r} is absolute; paths are relative to this conversation's workspace "
            "(the folder `terminal` runs in), e.g. 'notes/a.txt', not '/…/notes/a.txt'"
        )
    root = workspace.resolve()
    try:
        target = (root / path).resolve()
    except RuntimeError:  # Python 3.11's symlink loop
        raise WorkspaceError(f"path {path!r} runs into a symlink loop") from None
    if not target.is_relative_to(root):
        lexical = os.path.normpath(path)
        how = (
            "'..' leads above the workspace's top"
            if lexical == ".." or lexical.startswith("../")
            else "a symlink on the way points outside the workspace"
        )
        raise WorkspaceError(
            f"path {path!r} is outside the workspace ({how}); the file tools only reach "
            "files inside it: use a relative path that stays in it"
        )
    for folder in protected:
        folder = folder.resolve()
        workspace_inside = root != folder and root.is_relative_to(folder)
        if target.is_relative_to(folder) and not workspace_inside:
            raise WorkspaceError(f"path {path!r} is in actionq's data folder; tools may not use it")
    if target == root:
        raise WorkspaceError(f"path {path!r} is the workspace folder itself; name a file in it")
    return target


def _refuse_component(dir_fd: int, part: str, shown: str, path: str) -> WorkspaceError:
    """Why ``part`` (seen from ``dir_fd``) could not be opened as a folder."""
    try:
        mode = os.lstat(part, dir_fd=dir_fd).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return WorkspaceError(
            f"path {path!r}: {shown!r} became a symlink after the path was checked; refused"
        )
    return WorkspaceError(f"path {path!r}: {shown!r} is not a folder")


def _open_component(dir_fd: int, part: str, shown: str, path: str, create: bool) -> int:
    """``part`` of ``dir_fd`` as a folder, never through a symlink (made if
    missing and ``create``)."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise FileNotFoundError(
                f"path {path!r}: folder {shown!r} does not exist in the workspace"
            ) from None
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _refuse_component(dir_fd, part, shown, path) from None
        raise
    with contextlib.suppress(FileExistsError):  # made meanwhile: opened (and checked) below
        os.mkdir(part, 0o777, dir_fd=dir_fd)  # the umask decides, as for any mkdir
    return _open_component(dir_fd, part, shown, path, create=False)


@contextmanager
def open_folder(workspace: Path, folder: Path, path: str, create: bool = False) -> Iterator[int]:
    """A descriptor of ``folder`` (resolved, inside ``workspace``), opened one
    component at a time from the workspace without following symlinks;
    missing folders are made if ``create``. Closed on exit."""
    fd = os.open(workspace, _DIR_FLAGS)
    try:
        walked = Path()
        for part in folder.relative_to(workspace).parts:
            walked /= part
            next_fd = _open_component(fd, part, str(walked), path, create)
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def open_regular_at(dir_fd: int, name: str, path: str, flags: int, mode: int = 0o644) -> int:
    """Open ``name`` in ``dir_fd`` without blocking (a FIFO would) and without
    following a symlink; refuse anything but a regular file, judged on the
    open descriptor itself (no check-then-use race)."""
    try:
        fd = os.open(
            name, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd
        )
    except FileNotFoundError:
        raise FileNotFoundError(f"path {path!r} does not exist in the workspace") from None
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ELOOP):  # a FIFO without reader; a symlink
            raise WorkspaceError(f"path {path!r} is not a regular file") from None
        if e.errno == errno.EISDIR:
            raise WorkspaceError(f"path {path!r} is a folder, not a file") from None
        raise
    mode_now = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode_now):
        os.close(fd)
        what = "a folder, not a file" if stat.S_ISDIR(mode_now) else "not a regular file"
        raise WorkspaceError(f"path {path!r} is {what}")
    os.set_blocking(fd, True)
    return fd
