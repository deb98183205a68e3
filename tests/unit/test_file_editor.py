"""OpenHands' file_editor (actionq.tools.file_editor) and think, on real files
in tmp_path: each command, the mistakes that come back as ``is_error``
observations (the model reads them and corrects itself), the paths that are
refused as by the other file tools, the undo history kept in the workspace,
and what the model is shown of an observation. The tools run in this
process (a thread for their deadline; no subprocess, no socket)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from actionq.agent.view import result_text
from actionq.models import ObservationEvent
from actionq.settings import Settings
from actionq.tools import ToolContext, conversation_workspace, get_tool
from actionq.tools import file_editor as editor_module
from actionq.tools.builtin import ThinkArgs, run_think
from actionq.tools.file_editor import UNDO_DEPTH, UNDO_FOLDER, FileEditorArgs, run_file_editor
from actionq.tools.workspace import WorkspaceError

KEYS = {"command", "path", "prev_exist", "old_content", "new_content", "output", "is_error"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return conversation_workspace(Settings(workdir=str(tmp_path / "root")), "conv-1")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("do not read")
    return folder


def context(
    workspace: Path, max_output_bytes: int = 64 * 1024, protected: tuple[Path, ...] = ()
) -> ToolContext:
    return ToolContext(
        conversation_id=workspace.name,
        action_id="a1",
        workdir=workspace,
        max_output_bytes=max_output_bytes,
        memory_limit_mb=0,
        protected_paths=protected,
    )


def run(workspace: Path, ctx: ToolContext | None = None, **args: Any) -> dict[str, Any]:
    result = run_file_editor(FileEditorArgs(**args), ctx or context(workspace))
    assert set(result) == KEYS
    json.dumps(result)  # JSON-compatible, as an observation must be
    return result


def ok(workspace: Path, ctx: ToolContext | None = None, **args: Any) -> dict[str, Any]:
    result = run(workspace, ctx, **args)
    assert result["is_error"] is False, result["output"]
    return result


def error(workspace: Path, ctx: ToolContext | None = None, **args: Any) -> str:
    result = run(workspace, ctx, **args)
    assert result["is_error"] is True, result
    assert result["old_content"] is None and result["new_content"] is None
    return str(result["output"])


def shown(workspace: Path, rel: str) -> str:
    return str(workspace / rel)


# --- create -----------------------------------------------------------------------------


def test_create_makes_a_new_file_and_its_folders(workspace: Path) -> None:
    result = ok(workspace, command="create", path="pkg/sub/mod.py", file_text="x = 1\n")
    assert (workspace / "pkg" / "sub" / "mod.py").read_text() == "x = 1\n"
    assert result == {
        "command": "create",
        "path": shown(workspace, "pkg/sub/mod.py"),
        "prev_exist": False,
        "old_content": None,
        "new_content": "x = 1\n",
        "output": f"File created successfully at: {shown(workspace, 'pkg/sub/mod.py')}",
        "is_error": False,
    }
    # Written beside it and linked in place: no temporary is left.
    assert sorted(p.name for p in (workspace / "pkg" / "sub").iterdir()) == ["mod.py"]


def test_create_never_overwrites_and_needs_file_text(workspace: Path) -> None:
    (workspace / "a.txt").write_text("mine")
    message = error(workspace, command="create", path="a.txt", file_text="theirs")
    assert "File already exists at: " + shown(workspace, "a.txt") in message
    assert "Cannot overwrite files using command `create`" in message
    assert (workspace / "a.txt").read_text() == "mine"
    (workspace / "dir").mkdir()
    assert "already exists" in error(workspace, command="create", path="dir", file_text="x")
    assert "already exists" in error(workspace, command="create", path=".", file_text="x")
    message = error(workspace, command="create", path="new.txt")
    assert message.startswith("Parameter `file_text` is required for command: create.")
    assert not (workspace / "new.txt").exists()


# --- view -------------------------------------------------------------------------------


def test_view_of_a_file_is_numbered_as_cat_n(workspace: Path) -> None:
    (workspace / "a.py").write_text("one\ntwo\nthree\n")
    result = ok(workspace, command="view", path="a.py")
    assert result["output"] == (
        f"Here's the result of running `cat -n` on {shown(workspace, 'a.py')}:\n"
        "     1\tone\n     2\ttwo\n     3\tthree\n"
    )
    assert (result["prev_exist"], result["old_content"], result["new_content"]) == (
        True,
        None,
        None,
    )
    # A last line without its end is still a line.
    (workspace / "b.py").write_text("one\ntwo")
    assert ok(workspace, command="view", path="b.py")["output"].endswith("     2\ttwo\n")


def test_view_range_shows_part_and_refuses_ranges_outside_the_file(workspace: Path) -> None:
    (workspace / "a.py").write_text("".join(f"line {n}\n" for n in range(1, 11)))

    def view(view_range: list[int]) -> str:
        return str(ok(workspace, command="view", path="a.py", view_range=view_range)["output"])

    assert view([3, 4]).endswith("     3\tline 3\n     4\tline 4\n")
    assert view([9, -1]).endswith("     9\tline 9\n    10\tline 10\n")
    beyond = view([10, 99])
    assert beyond.startswith("NOTE: We only show up to 10 since there're only 10 lines")
    assert beyond.endswith("    10\tline 10\n")
    refused = {
        (0, 2): "Its first element `0` should be within the range of lines of the file: [1, 10]",
        (11, -1): "first element `11` should be within",
        (5, 4): "Its second element `4` should be greater than or equal to the first element",
    }
    for (start, end), message in refused.items():
        assert message in error(workspace, command="view", path="a.py", view_range=[start, end])
    assert "a list of two integers" in error(
        workspace, command="view", path="a.py", view_range=[1, 2, 3]
    )


def test_view_of_a_folder_lists_two_levels_without_hidden_entries(
    workspace: Path, outside: Path
) -> None:
    (workspace / "src" / "pkg" / "deep").mkdir(parents=True)
    (workspace / "src" / "main.py").write_text("")
    (workspace / "src" / "pkg" / "deep" / "too-deep.py").write_text("")
    (workspace / "src" / ".cache").mkdir()
    (workspace / "README").write_text("")
    (workspace / ".git").mkdir()
    (workspace / ".env").write_text("")
    (workspace / "out").symlink_to(outside)  # listed, never followed
    top = str(workspace)
    for path in (".", top, top + "/", "src/.."):
        result = ok(workspace, command="view", path=path)
        assert result["path"] == top
        assert result["output"] == (
            f"Here's the files and directories up to 2 levels deep in {top}, excluding "
            f"hidden items:\n{top}/\n{top}/README\n{top}/out\n{top}/src/\n"
            f"{top}/src/main.py\n{top}/src/pkg/\n\n"
            f"2 hidden files/directories in this directory are excluded. You can use "
            f"'ls -la {top}' to see them."
        )
    sub = ok(workspace, command="view", path="src/pkg")["output"]
    assert sub.endswith(f"{top}/src/pkg/\n{top}/src/pkg/deep/\n{top}/src/pkg/deep/too-deep.py")
    message = error(workspace, command="view", path="src", view_range=[1, 2])
    assert "not allowed when `path` points to a directory" in message


def test_view_of_a_missing_path_says_so(workspace: Path) -> None:
    for path in ("missing.txt", "no/such/folder.txt"):
        result = run(workspace, command="view", path=path)
        assert result["is_error"] is True and result["prev_exist"] is False
        assert result["output"] == (
            f"Invalid `path` parameter: {shown(workspace, path)}. The path "
            f"{shown(workspace, path)} does not exist. Please provide a valid path."
        )


def test_a_long_view_is_clipped_with_a_note(workspace: Path) -> None:
    (workspace / "big.txt").write_text("".join(f"line {n}\n" for n in range(5000)))
    output = ok(workspace, context(workspace, 2000), command="view", path="big.txt")["output"]
    assert len(output) < 2500 and "bytes of output truncated" in output
    assert output.endswith("then view them with `view_range`.</NOTE>")
    assert "     1\tline 0" in output and "  5000\tline 4999" in output  # head and tail


def test_binary_and_too_large_files_are_refused_as_mistakes(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "blob.bin").write_bytes(b"\xff\xfe\x00a")
    (workspace / "nul.txt").write_bytes(b"a\x00b")
    for path in ("blob.bin", "nul.txt"):
        assert "appears to be binary" in error(workspace, command="view", path=path)
        assert "binary" in error(
            workspace, command="str_replace", path=path, old_str="a", new_str="b"
        )
    assert (workspace / "blob.bin").read_bytes() == b"\xff\xfe\x00a"
    monkeypatch.setattr(editor_module, "MAX_EDIT_BYTES", 8)
    (workspace / "big.txt").write_text("123456789")
    assert "too large for this tool" in error(workspace, command="view", path="big.txt")


# --- str_replace ------------------------------------------------------------------------


def test_str_replace_edits_the_one_occurrence_keeping_the_mode(workspace: Path) -> None:
    path = workspace / "code.py"
    before = "def f():\n    return 1\n\n\ndef g():\n    return 2\n"
    path.write_text(before)
    path.chmod(0o640)
    result = ok(
        workspace,
        command="str_replace",
        path="code.py",
        old_str="    return 2",
        new_str="    return 3",
    )
    after = before.replace("return 2", "return 3")
    assert path.read_text() == after
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (result["prev_exist"], result["old_content"], result["new_content"]) == (
        True,
        before,
        after,
    )
    assert result["output"] == (
        f"The file {shown(workspace, 'code.py')} has been edited. Here's the result of running "
        f"`cat -n` on a snippet of {shown(workspace, 'code.py')}:\n"
        "     2\t    return 1\n     3\t\n     4\t\n     5\tdef g():\n     6\t    return 3\n"
        "Review the changes and make sure they are as expected. Edit the file again if "
        "necessary."
    )
    # new_str left out deletes old_str.
    ok(workspace, command="str_replace", path="code.py", old_str="\n\ndef g():\n    return 3\n")
    assert path.read_text() == "def f():\n    return 1\n"


def test_str_replace_mistakes_change_nothing_and_say_why(workspace: Path) -> None:
    path = workspace / "a.txt"
    path.write_text("x = 1\ny = 2\nx = 1\nz = 3\nx = 1\n")

    def replace(**args: Any) -> str:
        return error(workspace, command="str_replace", path="a.txt", **args)

    assert "old_str `gamma` did not appear verbatim in " + shown(workspace, "a.txt") in replace(
        old_str="gamma", new_str="delta"
    )
    assert "did not appear verbatim" in replace(old_str="X = 1", new_str="x")  # case counts
    assert "Multiple occurrences of old_str `x = 1` in lines [1, 3, 5]" in replace(
        old_str="x = 1", new_str="x = 9"
    )
    assert "must be different" in replace(old_str="y = 2", new_str="y = 2")
    assert "it is empty" in replace(old_str="", new_str="y")
    long = error(
        workspace,
        context(workspace, max_output_bytes=1000),
        command="str_replace",
        path="a.txt",
        old_str="q" * 5000,
    )
    assert "did not appear verbatim" in long and len(long) < 1200
    assert replace(new_str="y").startswith(
        "Parameter `old_str` is required for command: str_replace."
    )
    assert path.read_text() == "x = 1\ny = 2\nx = 1\nz = 3\nx = 1\n"
    assert not (workspace / UNDO_FOLDER).exists()  # nothing edited, nothing to undo
    (workspace / "dir").mkdir()
    message = error(workspace, command="str_replace", path="dir", old_str="a", new_str="b")
    assert "is a directory and only the `view` command can be used on directories" in message
    missing = run(workspace, command="str_replace", path="nope.txt", old_str="a", new_str="b")
    assert missing["is_error"] is True and missing["prev_exist"] is False


# --- insert -----------------------------------------------------------------------------


def test_insert_puts_lines_after_the_given_line(workspace: Path) -> None:
    path = workspace / "a.txt"
    path.write_text("one\ntwo\n")
    ok(workspace, command="insert", path="a.txt", insert_line=0, new_str="zero")
    assert path.read_text() == "zero\none\ntwo\n"
    result = ok(workspace, command="insert", path="a.txt", insert_line=2, new_str="1.5\n1.7\n")
    assert path.read_text() == "zero\none\n1.5\n1.7\ntwo\n"
    assert result["old_content"] == "zero\none\ntwo\n"
    assert "     3\t1.5\n     4\t1.7\n" in result["output"]
    ok(workspace, command="insert", path="a.txt", insert_line=5, new_str="end")
    assert path.read_text() == "zero\none\n1.5\n1.7\ntwo\nend\n"
    # After a last line without its end: the new line starts on its own.
    (workspace / "b.txt").write_text("last")
    ok(workspace, command="insert", path="b.txt", insert_line=1, new_str="after")
    assert (workspace / "b.txt").read_text() == "last\nafter\n"
    (workspace / "empty.txt").write_text("")
    ok(workspace, command="insert", path="empty.txt", insert_line=0, new_str="first")
    assert (workspace / "empty.txt").read_text() == "first\n"


def test_insert_mistakes_change_nothing(workspace: Path) -> None:
    path = workspace / "a.txt"
    path.write_text("one\ntwo\n")
    message = error(workspace, command="insert", path="a.txt", insert_line=3, new_str="x")
    assert "Invalid `insert_line` parameter: 3. It should be within the range of allowed " in (
        message
    )
    assert "[0, 2]" in message
    assert "Parameter `insert_line` is required for command: insert" in error(
        workspace, command="insert", path="a.txt", new_str="x"
    )
    assert "Parameter `new_str` is required for command: insert" in error(
        workspace, command="insert", path="a.txt", insert_line=1
    )
    assert path.read_text() == "one\ntwo\n"
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        FileEditorArgs(command="insert", path="a.txt", insert_line=-1, new_str="x")


# --- undo_edit --------------------------------------------------------------------------


def test_undo_edit_goes_back_one_edit_at_a_time(workspace: Path) -> None:
    path = workspace / "a.txt"
    ok(workspace, command="create", path="a.txt", file_text="v1\n")
    ok(workspace, command="str_replace", path="a.txt", old_str="v1", new_str="v2")
    ok(workspace, command="insert", path="a.txt", insert_line=1, new_str="v3")
    assert path.read_text() == "v2\nv3\n"
    path.chmod(0o600)
    result = ok(workspace, command="undo_edit", path="a.txt")
    assert path.read_text() == "v2\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (result["old_content"], result["new_content"]) == ("v2\nv3\n", "v2\n")
    assert result["output"] == (
        f"Last edit to {shown(workspace, 'a.txt')} undone successfully. Here's the result of "
        f"running `cat -n` on {shown(workspace, 'a.txt')}:\n     1\tv2\n"
    )
    ok(workspace, command="undo_edit", path="a.txt")
    assert path.read_text() == "v1\n"
    # The create itself is not undone: there is nothing before it.
    message = error(workspace, command="undo_edit", path="a.txt")
    assert message == f"No edit history found for {shown(workspace, 'a.txt')}."
    assert path.read_text() == "v1\n"


def test_undo_history_is_per_file_bounded_shared_by_aliases_and_reset_by_create(
    workspace: Path,
) -> None:
    path = workspace / "a.txt"
    path.write_text("0")
    for n in range(1, UNDO_DEPTH + 3):
        ok(workspace, command="str_replace", path="a.txt", old_str=str(n - 1), new_str=str(n))
    (workspace / "alias.txt").symlink_to("a.txt")
    (workspace / "other.txt").write_text("other")
    assert "No edit history" in error(workspace, command="undo_edit", path="other.txt")
    for _ in range(UNDO_DEPTH):
        ok(workspace, command="undo_edit", path="alias.txt")
    assert path.read_text() == "2"  # the two oldest fell out of the history
    assert "No edit history" in error(workspace, command="undo_edit", path="a.txt")
    # A file made anew (after the old one was removed) has no past.
    ok(workspace, command="str_replace", path="a.txt", old_str="2", new_str="3")
    path.unlink()
    ok(workspace, command="create", path="a.txt", file_text="fresh")
    assert "No edit history" in error(workspace, command="undo_edit", path="a.txt")
    assert path.read_text() == "fresh"
    # The history is hidden, and a view of the workspace counts it as such.
    assert (workspace / UNDO_FOLDER).is_dir()
    listing = ok(workspace, command="view", path=".")["output"]
    assert UNDO_FOLDER not in listing and "1 hidden files/directories" in listing


def test_a_symlink_planted_as_the_undo_folder_is_refused(workspace: Path, outside: Path) -> None:
    (workspace / UNDO_FOLDER).symlink_to(outside)  # e.g. by a terminal command
    (workspace / "a.txt").write_text("one")
    with pytest.raises(WorkspaceError, match="became a symlink"):
        run(workspace, command="str_replace", path="a.txt", old_str="one", new_str="two")
    assert (workspace / "a.txt").read_text() == "one"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


# --- paths ------------------------------------------------------------------------------


def test_absolute_paths_inside_the_workspace_work(workspace: Path) -> None:
    absolute = str(workspace / "notes" / "a.txt")
    result = ok(workspace, command="create", path=absolute, file_text="hi\n")
    assert result["path"] == absolute
    ok(workspace, command="str_replace", path=absolute, old_str="hi", new_str="ho")
    assert ok(workspace, command="view", path="notes//a.txt")["path"] == absolute
    assert (workspace / "notes" / "a.txt").read_text() == "ho\n"


def test_paths_out_of_the_workspace_are_refused_as_by_the_file_tools(
    workspace: Path, outside: Path
) -> None:
    (workspace / "link").symlink_to(outside)
    (workspace / "file-link").symlink_to(outside / "secret.txt")
    refused = {
        str(outside / "secret.txt"): "is outside this conversation's workspace",
        "/etc/passwd": "is outside this conversation's workspace",
        str(workspace) + "/../outside/secret.txt": "'..' leads above",
        "../outside/secret.txt": "'..' leads above",
        "link/secret.txt": "a symlink on the way points outside",
        "file-link": "a symlink on the way points outside",
        "a\0b": "NUL",
    }
    for path, message in refused.items():
        for args in (
            {"command": "view"},
            {"command": "create", "file_text": "x"},
            {"command": "str_replace", "old_str": "do", "new_str": "x"},
            {"command": "insert", "insert_line": 0, "new_str": "x"},
            {"command": "undo_edit"},
        ):
            with pytest.raises(WorkspaceError, match=message):
                run(workspace, path=path, **args)
    assert (outside / "secret.txt").read_text() == "do not read"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_the_data_folder_is_refused(workspace: Path) -> None:
    data = workspace / ".actionq"
    data.mkdir()
    (data / "api-key").write_text("key-secret")
    ctx = context(workspace, protected=(data,))
    for path in (".actionq/api-key", str(data / "api-key")):
        with pytest.raises(WorkspaceError, match="is in actionq's data folder") as refused:
            run(workspace, ctx, command="view", path=path)
        assert "key-secret" not in str(refused.value)


# --- what is stored, what the model reads -----------------------------------------------


def test_contents_past_the_output_cap_are_left_out_of_the_observation(workspace: Path) -> None:
    (workspace / "big.txt").write_text("x" * 5000 + "\nend\n")
    ctx = context(workspace, max_output_bytes=4096)
    result = run(workspace, ctx, command="str_replace", path="big.txt", old_str="end", new_str="e")
    assert result["is_error"] is False
    assert result["old_content"] is None and result["new_content"] is None
    assert (workspace / "big.txt").read_text().endswith("\ne\n")
    assert len(result["output"]) <= 4096 + 100


def test_the_model_reads_the_observation_without_the_file_contents(workspace: Path) -> None:
    result = ok(workspace, command="create", path="a.txt", file_text="the content\n")
    event = ObservationEvent(
        action_id="a1", tool_call_id="c1", tool_name="file_editor", observation=result
    )
    seen = json.loads(result_text(event))
    assert set(seen) == KEYS - {"old_content", "new_content"}
    assert seen["output"] == result["output"]
    assert get_tool("file_editor").model_omits == ("old_content", "new_content")
    # Other tools: the whole observation, as before.
    terminal = ObservationEvent(
        action_id="a2",
        tool_call_id="c2",
        tool_name="terminal",
        observation={"command": "ls", "exit_code": 0, "output": "a.txt\n", "new_content": 1},
    )
    assert json.loads(result_text(terminal)) == terminal.observation


def test_think_logs_the_thought_and_changes_nothing(workspace: Path) -> None:
    result = run_think(ThinkArgs(thought="first the tests, then the fix"), context(workspace))
    assert result == {"output": "Your thought has been logged."}
    assert list(workspace.iterdir()) == []
    assert get_tool("think").risk == "LOW"
    assert get_tool("file_editor").risk == "MEDIUM"


def test_the_spec_has_openhands_argument_names() -> None:
    parameters = get_tool("file_editor").spec()["function"]["parameters"]
    assert parameters["required"] == ["command", "path"]
    assert set(parameters["properties"]) == {
        "command",
        "path",
        "file_text",
        "old_str",
        "new_str",
        "insert_line",
        "view_range",
    }
    assert parameters["properties"]["command"]["enum"] == [
        "view",
        "create",
        "str_replace",
        "insert",
        "undo_edit",
    ]
    assert get_tool("think").spec()["function"]["parameters"]["required"] == ["thought"]
