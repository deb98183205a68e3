"""Per-conversation workspaces with a real prefork worker: each conversation's
`terminal` runs in its own folder under the workspace root, and what one
conversation writes is not there for another by relative path."""

from __future__ import annotations

import stat
from pathlib import Path

from actionq.models import ErrorCause, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.tools import conversation_workspace
from tests.conftest import WorkerFactory
from tests.events import only_error, terminal_events


def observation(aq: ActionQ, cid: str, action_id: str) -> dict[str, object]:
    aq.wait_for_action(action_id, 30)
    [event] = terminal_events(aq, cid, action_id)
    assert isinstance(event, ObservationEvent), event
    return event.observation


def test_two_conversations_work_in_two_folders_and_do_not_share_files(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory, workdir: Path
) -> None:
    start_worker(concurrency=2)
    first, second = aq.create_conversation().id, aq.create_conversation().id
    pwd = {cid: aq.submit_action(cid, "terminal", {"command": "pwd"}) for cid in (first, second)}
    folders = {
        cid: Path(str(observation(aq, cid, a.id)["output"]).strip()) for cid, a in pwd.items()
    }

    assert folders[first] != folders[second]
    for cid, folder in folders.items():
        assert folder == workdir.resolve() / cid == conversation_workspace(settings, cid)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    written = aq.submit_action(first, "file_write", {"path": "note.txt", "content": "first's"})
    assert observation(aq, first, written.id)["bytes_written"] == 7
    by_shell = aq.submit_action(first, "terminal", {"command": "echo shell > made.txt; ls"})
    assert observation(aq, first, by_shell.id)["output"] == "made.txt\nnote.txt\n"

    seen = aq.submit_action(second, "terminal", {"command": "ls -A; cat note.txt made.txt"})
    result = observation(aq, second, seen.id)
    assert result["exit_code"] != 0 and "first's" not in str(result["output"])
    assert "No such file" in str(result["output"])
    read = aq.submit_action(second, "file_read", {"path": "note.txt"})
    aq.wait_for_action(read.id, 30)
    error = only_error(aq, second, read.id)
    assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
    assert "'note.txt' does not exist in the workspace" in error.error
    # The first conversation's files are where it put them, and only there.
    assert (folders[first] / "note.txt").read_text() == "first's"
    assert sorted(p.name for p in folders[second].iterdir()) == []


def test_file_edit_through_the_worker(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    path = conversation_workspace(settings, cid) / "app.cfg"
    path.write_text("port = 1\nhost = a\nport = 1\n")
    path.chmod(0o600)
    twice = aq.submit_action(
        cid, "file_edit", {"path": "app.cfg", "old_str": "port = 1", "new_str": "port = 2"}
    )
    once = aq.submit_action(
        cid, "file_edit", {"path": "app.cfg", "old_str": "host = a", "new_str": "host = b"}
    )
    result = observation(aq, cid, once.id)

    error = only_error(aq, cid, twice.id)
    assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
    assert "old_str occurs 2 times in 'app.cfg' (lines 1, 3); nothing was changed" in error.error
    assert result["line"] == 2 and "host = b" in str(result["snippet"])
    assert path.read_text() == "port = 1\nhost = b\nport = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_openhands_tools_through_the_worker(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory
) -> None:
    """file_editor and think run as actions; a file_editor mistake is an
    observation (is_error), not an AgentErrorEvent; terminal names its command."""
    start_worker()
    cid = aq.create_conversation().id
    folder = conversation_workspace(settings, cid)
    absolute = str(folder / "src" / "app.py")
    replace = {"command": "str_replace", "path": absolute}
    calls = [
        ("file_editor", {"command": "create", "path": "src/app.py", "file_text": "x = 1\n"}),
        ("file_editor", {**replace, "old_str": "x", "new_str": "y"}),
        ("file_editor", {**replace, "old_str": "zz", "new_str": "q"}),
        ("file_editor", {"command": "view", "path": "."}),
        ("think", {"thought": "undo, then check with the shell"}),
        ("file_editor", {"command": "undo_edit", "path": "src/app.py"}),
        ("terminal", {"command": "cat src/app.py"}),
    ]
    actions = [aq.submit_action(cid, tool, arguments) for tool, arguments in calls]
    created, replaced, missed, listed, thought, undone, shell = (
        observation(aq, cid, a.id) for a in actions
    )

    assert created["prev_exist"] is False and created["path"] == absolute
    assert created["output"] == f"File created successfully at: {absolute}"
    assert (replaced["old_content"], replaced["new_content"]) == ("x = 1\n", "y = 1\n")
    assert replaced["is_error"] is False and "     1\ty = 1" in str(replaced["output"])
    assert missed["is_error"] is True and "did not appear verbatim" in str(missed["output"])
    assert f"{folder}/src/\n{folder}/src/app.py" in str(listed["output"])
    assert thought == {"output": "Your thought has been logged."}
    assert undone["new_content"] == "x = 1\n" and undone["is_error"] is False
    assert shell["command"] == "cat src/app.py" and shell["output"] == "x = 1\n"
    assert shell["exit_code"] == 0
    assert (folder / "src" / "app.py").read_text() == "x = 1\n"
