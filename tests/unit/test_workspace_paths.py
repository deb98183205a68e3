"""Per-conversation workspaces and the file tools' confinement to them
(actionq.tools.workspace, actionq.tools.files), on real files in tmp_path:
every way out is refused with a message that says what to do instead, and
the paths that stay inside work. The tools run in this process (a thread for
their deadline; no subprocess, no socket)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from actionq.models import conversation_id_problem
from actionq.settings import Settings, default_workspace_root
from actionq.tools import ToolContext, conversation_workspace
from actionq.tools.files import (
    FileEditArgs,
    FileReadArgs,
    FileWriteArgs,
    edit_text,
    run_file_edit,
    run_file_read,
    run_file_write,
)
from actionq.tools.workspace import (
    WorkspaceError,
    check_workspace_root,
    open_folder,
    open_regular_at,
    resolve_in_workspace,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def settings(root: Path) -> Settings:
    return Settings(workdir=str(root))


@pytest.fixture
def workspace(settings: Settings) -> Path:
    return conversation_workspace(settings, "conv-1")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace root holding a secret."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("do not read")
    return folder


def context(workspace: Path, protected: tuple[Path, ...] = ()) -> ToolContext:
    return ToolContext(
        conversation_id=workspace.name,
        action_id="a1",
        workdir=workspace,
        max_output_bytes=64 * 1024,
        memory_limit_mb=0,
        protected_paths=protected,
    )


def read(workspace: Path, path: str) -> str:
    return str(run_file_read(FileReadArgs(path=path), context(workspace))["content"])


def write(workspace: Path, path: str, content: str) -> None:
    run_file_write(FileWriteArgs(path=path, content=content), context(workspace))


def edit(workspace: Path, path: str, old: str, new: str) -> dict[str, object]:
    return run_file_edit(FileEditArgs(path=path, old_str=old, new_str=new), context(workspace))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the workspace folder --------------------------------------------------------------


def test_each_conversation_gets_its_own_private_folder_made_on_first_use(
    root: Path, settings: Settings
) -> None:
    assert not root.exists()
    first = conversation_workspace(settings, "conv-1")
    second = conversation_workspace(settings, "conv-2")
    assert first == root.resolve() / "conv-1" and second == root.resolve() / "conv-2"
    assert first.is_dir() and second.is_dir()
    assert mode(first) == mode(second) == mode(root) == 0o700
    # Again: the same folder, its files kept.
    (first / "kept.txt").write_text("x")
    assert conversation_workspace(settings, "conv-1") == first
    assert (first / "kept.txt").read_text() == "x"


def test_missing_parents_of_the_root_are_made_private_too(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "root"
    folder = conversation_workspace(Settings(workdir=str(root)), "c")
    for made in (tmp_path / "a", tmp_path / "a" / "b", root, folder):
        assert mode(made) == 0o700, made
    assert folder.parent == root.resolve()


def test_the_default_root_is_per_user_data_never_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ACTIONQ_WORKDIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    expected = tmp_path / "home" / ".local" / "share" / "actionq" / "workspace"
    assert default_workspace_root() == expected
    assert Settings().workspace_root == expected
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().workspace_root == tmp_path / "xdg" / "actionq" / "workspace"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # invalid by the XDG spec: ignored
    assert Settings().workspace_root == expected
    assert Settings(workdir="~/ws").workspace_root == tmp_path / "home" / "ws"


@pytest.mark.parametrize(
    "bad",
    ["..", ".", "../escape", "a/b", "/etc", "", "-rf", "x\n", "x" * 129, "a\\b", "ü"],
)
def test_no_conversation_id_leaves_the_root(settings: Settings, root: Path, bad: str) -> None:
    assert conversation_id_problem(bad) is not None
    with pytest.raises(WorkspaceError, match="no workspace for this conversation"):
        conversation_workspace(settings, bad)
    assert not (root.parent / "escape").exists() and not Path("/etc/actionq").exists()


def test_ids_the_api_makes_or_accepts_are_valid() -> None:
    for good in ("3f2b8c1e-1111-4222-8333-444455556666", "a", "A.b_c-9", "x" * 128, "a..b"):
        assert conversation_id_problem(good) is None, good


def test_the_data_folder_is_never_a_workspace_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "workspace").mkdir(parents=True)
    with pytest.raises(WorkspaceError, match="is actionq's data folder"):
        check_workspace_root(data, data)
    with pytest.raises(WorkspaceError, match="beside its keys"):
        check_workspace_root(data / "redis", data)
    with pytest.raises(WorkspaceError, match="is actionq's data folder"):
        conversation_workspace(Settings(workdir=str(data), data_dir=str(data)), "c")
    assert not (data / "c").exists()
    # `actionq up`'s layout, and a root beside the data folder, are fine.
    assert check_workspace_root(data / "workspace", data) == (data / "workspace").resolve()
    assert check_workspace_root(data / "workspace" / "deeper", data).name == "deeper"
    assert check_workspace_root(tmp_path / "other", data) == (tmp_path / "other").resolve()


def test_a_workspace_holding_the_data_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "c" / ".actionq").mkdir(parents=True)
    settings = Settings(workdir=str(root), data_dir=str(root / "c" / ".actionq"))
    with pytest.raises(WorkspaceError, match="holds actionq's data folder"):
        conversation_workspace(settings, "c")
    # A conversation named like a data folder that lies in the root.
    (root / "data").mkdir()
    with pytest.raises(WorkspaceError, match="holds actionq's data folder"):
        conversation_workspace(Settings(workdir=str(root), data_dir=str(root / "data")), "data")
    assert conversation_workspace(settings, "other") == root.resolve() / "other"


def test_a_symlink_planted_as_a_workspace_is_refused(
    root: Path, settings: Settings, outside: Path
) -> None:
    conversation_workspace(settings, "first")
    (root / "victim").symlink_to(outside)  # e.g. `ln -s` by another conversation's command
    with pytest.raises(WorkspaceError, match="is not a folder"):
        conversation_workspace(settings, "victim")


# --- paths: refused ---------------------------------------------------------------------


def test_absolute_paths_are_refused_even_inside(workspace: Path, outside: Path) -> None:
    (workspace / "a.txt").write_text("inside")
    for path in (str(outside / "secret.txt"), str(workspace / "a.txt"), "/etc/passwd"):
        with pytest.raises(WorkspaceError, match="is absolute; paths are relative to this"):
            read(workspace, path)


@pytest.mark.parametrize("path", ["../outside/secret.txt", "..", "sub/../../x", "a/../../.."])
def test_dot_dot_out_of_the_workspace_is_refused(workspace: Path, path: str) -> None:
    (workspace / "sub").mkdir()
    for attempt in (lambda: read(workspace, path), lambda: write(workspace, path, "x")):
        with pytest.raises(WorkspaceError, match=r"outside the workspace \('\.\.' leads above"):
            attempt()
    assert not (workspace.parent / "x").exists()


def test_symlinks_pointing_out_are_refused_last_component_or_on_the_way(
    workspace: Path, outside: Path
) -> None:
    (workspace / "file-link").symlink_to(outside / "secret.txt")
    (workspace / "dir-link").symlink_to(outside)
    (workspace / "sub").mkdir()
    (workspace / "sub" / "deep-link").symlink_to("../../../outside")
    attempts = [
        lambda: read(workspace, "file-link"),
        lambda: read(workspace, "dir-link/secret.txt"),
        lambda: read(workspace, "sub/deep-link/secret.txt"),
        lambda: write(workspace, "file-link", "x"),
        lambda: write(workspace, "dir-link/new.txt", "x"),
        lambda: write(workspace, "dir-link/made/new.txt", "x"),
        lambda: edit(workspace, "file-link", "do not", "now"),
    ]
    for attempt in attempts:
        with pytest.raises(WorkspaceError, match="a symlink on the way points outside"):
            attempt()
    assert (outside / "secret.txt").read_text() == "do not read"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_symlink_loop_is_refused(workspace: Path) -> None:
    (workspace / "loop").symlink_to("loop")
    with pytest.raises(WorkspaceError):
        read(workspace, "loop/x")


def test_the_data_folder_is_refused(workspace: Path) -> None:
    # (conversation_workspace refuses a workspace holding it; the path check
    # holds on its own too.)
    data = workspace / ".actionq"
    data.mkdir()
    (data / "api-key").write_text("key-secret")
    ctx = context(workspace, protected=(data,))
    for path in (".actionq/api-key", "sub/../.actionq/api-key", ".actionq/new/file"):
        with pytest.raises(WorkspaceError, match="is in actionq's data folder") as refused:
            run_file_read(FileReadArgs(path=path), ctx)
        assert "key-secret" not in str(refused.value)
        with pytest.raises(WorkspaceError, match="is in actionq's data folder"):
            run_file_write(FileWriteArgs(path=path, content="x"), ctx)
    assert (data / "api-key").read_text() == "key-secret" and not (data / "new").exists()
    # A workspace inside the data folder (`actionq up`'s) may use its own files.
    inner = data / "workspace" / "c"
    inner.mkdir(parents=True)
    run_file_write(FileWriteArgs(path="a.txt", content="ok"), context(inner, (data,)))
    assert (inner / "a.txt").read_text() == "ok"


def test_other_unusable_paths_say_why(workspace: Path) -> None:
    (workspace / "sub").mkdir()
    (workspace / "plain.txt").write_text("x")
    os.mkfifo(workspace / "pipe")
    cases = [
        (".", "the workspace folder itself"),
        ("sub/..", "the workspace folder itself"),
        ("sub", "is a folder, not a file"),
        ("pipe", "is not a regular file"),
        ("plain.txt/x", "'plain.txt' is not a folder"),
        ("a\0b", "NUL"),
    ]
    for path, message in cases:
        with pytest.raises(WorkspaceError, match=message):
            read(workspace, path)
    with pytest.raises(WorkspaceError, match="is not a regular file"):
        write(workspace, "pipe", "x")  # at once: no reader, and O_NONBLOCK
    with pytest.raises(FileNotFoundError, match=r"'missing\.txt' does not exist in the workspace"):
        read(workspace, "missing.txt")
    with pytest.raises(FileNotFoundError, match="folder 'nope' does not exist"):
        read(workspace, "nope/a.txt")


def test_a_symlink_swapped_in_after_the_check_is_not_followed(
    workspace: Path, outside: Path
) -> None:
    (workspace / "sub").mkdir()
    (workspace / "sub" / "a.txt").write_text("inside")
    # Checked while 'sub' is a folder ...
    target = resolve_in_workspace(workspace, "sub/a.txt")
    # ... then a command (or another process) puts a symlink in its place.
    (workspace / "sub" / "a.txt").unlink()
    (workspace / "sub").rmdir()
    (workspace / "sub").symlink_to(outside)
    with (
        pytest.raises(WorkspaceError, match="'sub' became a symlink after the path was checked"),
        open_folder(workspace, target.parent, "sub/a.txt"),
    ):
        pass
    # The last component swapped for a symlink: refused on open (O_NOFOLLOW).
    (workspace / "sub").unlink()
    (workspace / "b.txt").write_text("inside")
    target = resolve_in_workspace(workspace, "b.txt")
    (workspace / "b.txt").unlink()
    (workspace / "b.txt").symlink_to(outside / "secret.txt")
    with open_folder(workspace, target.parent, "b.txt") as dir_fd:
        with pytest.raises(WorkspaceError, match="is not a regular file"):
            open_regular_at(dir_fd, target.name, "b.txt", os.O_RDONLY)
        with pytest.raises(WorkspaceError, match="is not a regular file"):
            open_regular_at(dir_fd, target.name, "b.txt", os.O_WRONLY | os.O_CREAT)
    assert (outside / "secret.txt").read_text() == "do not read"


# --- paths: allowed ---------------------------------------------------------------------


def test_paths_that_stay_inside_work(workspace: Path) -> None:
    write(workspace, "notes/deep/a.txt", "hello")  # missing folders are made
    assert (workspace / "notes" / "deep" / "a.txt").read_text() == "hello"
    assert read(workspace, "notes/deep/a.txt") == "hello"
    assert read(workspace, "./notes/../notes/deep/a.txt") == "hello"
    run_file_write(
        FileWriteArgs(path="notes/deep/a.txt", content=" world", append=True), context(workspace)
    )
    assert read(workspace, "notes//deep/a.txt") == "hello world"
    # A symlink that stays inside the workspace may be used.
    (workspace / "here").symlink_to("notes/deep")
    assert read(workspace, "here/a.txt") == "hello world"
    write(workspace, "here/b.txt", "via link")
    assert (workspace / "notes" / "deep" / "b.txt").read_text() == "via link"


def test_conversations_do_not_see_each_others_files(settings: Settings) -> None:
    first = conversation_workspace(settings, "one")
    second = conversation_workspace(settings, "two")
    write(first, "mine.txt", "one's")
    with pytest.raises(FileNotFoundError):
        read(second, "mine.txt")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        read(second, "../one/mine.txt")


# --- file_edit --------------------------------------------------------------------------


def test_file_edit_replaces_the_one_occurrence_atomically_keeping_the_mode(
    workspace: Path,
) -> None:
    path = workspace / "code.py"
    path.write_text("def f():\n    return 1\n\n\ndef g():\n    return 2\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    result = edit(workspace, "code.py", "    return 2\n", "    return 3\n")
    assert path.read_text() == "def f():\n    return 1\n\n\ndef g():\n    return 3\n"
    assert mode(path) == 0o640
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert result["line"] == 6
    assert "     6\t    return 3" in str(result["snippet"])
    assert sorted(p.name for p in workspace.iterdir()) == ["code.py"]  # no temporary left
    # An empty new_str deletes; a multi-line old_str is fine.
    edit(workspace, "code.py", "\n\ndef g():\n    return 3\n", "")
    assert path.read_text() == "def f():\n    return 1\n"


def test_file_edit_refuses_zero_occurrences_and_changes_nothing(workspace: Path) -> None:
    path = workspace / "a.txt"
    path.write_text("alpha\nbeta\n")
    with pytest.raises(
        ValueError, match=r"old_str does not occur in 'a\.txt'; nothing was changed"
    ):
        edit(workspace, "a.txt", "gamma", "delta")
    with pytest.raises(ValueError, match="does not occur"):
        edit(workspace, "a.txt", "Alpha", "x")  # exact: case counts
    assert path.read_text() == "alpha\nbeta\n"


def test_file_edit_refuses_several_occurrences_and_says_how_many_and_where(
    workspace: Path,
) -> None:
    path = workspace / "a.txt"
    path.write_text("x = 1\ny = 2\nx = 1\nz = 3\nx = 1\n")
    with pytest.raises(ValueError, match=r"occurs 3 times in 'a.txt' \(lines 1, 3, 5\)"):
        edit(workspace, "a.txt", "x = 1", "x = 9")
    assert path.read_text() == "x = 1\ny = 2\nx = 1\nz = 3\nx = 1\n"
    # Unique once it has more context.
    edit(workspace, "a.txt", "z = 3\nx = 1", "z = 3\nx = 9")
    assert path.read_text() == "x = 1\ny = 2\nx = 1\nz = 3\nx = 9\n"


def test_edit_text_counts_overlapping_occurrences() -> None:
    with pytest.raises(ValueError, match="occurs 2 times"):
        edit_text("aaa", "aa", "b", "f")
    assert edit_text("abc", "b", "B", "f") == ("aBc", 1)
    with pytest.raises(ValueError, match="the same"):
        edit_text("abc", "b", "b", "f")


def test_file_edit_needs_an_existing_text_file(workspace: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'new\.txt' does not exist"):
        edit(workspace, "new.txt", "a", "b")
    assert not (workspace / "new.txt").exists()
    (workspace / "blob.bin").write_bytes(b"\xff\xfe a")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        edit(workspace, "blob.bin", "a", "b")
    assert (workspace / "blob.bin").read_bytes() == b"\xff\xfe a"
    with pytest.raises(WorkspaceError, match="is absolute"):
        edit(workspace, str(workspace / "blob.bin"), "a", "b")
    with pytest.raises(WorkspaceError, match=r"'\.\.' leads above"):
        edit(workspace, "../x.txt", "a", "b")


def test_file_edit_through_a_symlink_inside_edits_its_target(workspace: Path) -> None:
    (workspace / "real.txt").write_text("one two")
    (workspace / "alias.txt").symlink_to("real.txt")
    edit(workspace, "alias.txt", "two", "three")
    assert (workspace / "real.txt").read_text() == "one three"
    assert (workspace / "alias.txt").is_symlink()
