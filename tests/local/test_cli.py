"""The ``actionq`` command line as users run it: the installed console script in
a subprocess, with a clean environment (no ACTIONQ_* from the test run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerFactory
from tests.helpers import ROOT, free_port, wait_for
from tests.up_process import UpProcess

ACTIONQ = str(Path(sys.executable).parent / "actionq")


def actionq(
    *args: str, cwd: Path = ROOT, timeout: float = 60, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run the console script with only the given ACTIONQ_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env.pop("PYTHONPATH", None)
    env |= {f"ACTIONQ_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run(
        [ACTIONQ, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """A non-zero exit with exactly one line on stderr that contains ``expected``."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], result.stderr
    return lines[0]


# --- configuration mistakes: one line, no traceback ------------------------------


def test_api_without_keys_is_one_line() -> None:
    assert_one_line_error(actionq("api", "--port", str(free_port())), "ACTIONQ_API_KEYS")


@pytest.mark.parametrize("command", [["recover"], ["sweeper", "--once"]])
def test_redis_down_is_one_line(command: list[str]) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    line = assert_one_line_error(actionq(*command, redis_url=nobody), "unavailable")
    assert nobody in line  # says which Redis it tried


def test_mistyped_setting_suggests_the_name() -> None:
    line = assert_one_line_error(actionq("config", redis_ulr="redis://x"), "ACTIONQ_REDIS_ULR")
    assert "did you mean ACTIONQ_REDIS_URL?" in line


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_work_with_a_mistyped_setting(flag: str) -> None:
    result = actionq(flag, redis_ulr="redis://x")
    assert result.returncode == 0, result.stderr
    assert ("Usage:" in result.stdout) if flag == "--help" else ("version" in result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:"), result.stderr
    assert "ACTIONQ_REDIS_ULR" in lines[0] and "ACTIONQ_REDIS_URL" in lines[0]


def test_invalid_value_names_the_variable_without_pydantic_urls() -> None:
    line = assert_one_line_error(actionq("config", api_port="abc"), "ACTIONQ_API_PORT")
    assert "valid integer" in line and "abc" in line
    assert "errors.pydantic.dev" not in line


def test_worker_with_a_mistyped_setting_is_one_line() -> None:
    assert_one_line_error(actionq("worker", redis_ulr="redis://x"), "did you mean")


def test_agent_worker_with_an_unusable_secret_key_file_is_one_line(tmp_path: Path) -> None:
    """Refused before Celery starts, naming the file and the problem, never
    what the file holds."""
    readable = tmp_path / "readable-key"
    readable.write_text("XeRt0hBcOA3s3dQy0b6hVJm3qJ1mHkXvG2mQ4o0pWnA=\n")
    readable.chmod(0o644)
    line = assert_one_line_error(
        actionq("worker", "--agent", secret_key_file=str(readable)),
        f"ACTIONQ_SECRET_KEY_FILE: {readable} is accessible by group or others (mode 0644)",
        f"chmod 600 {readable}",
    )
    assert "XeRt0h" not in line
    malformed = tmp_path / "malformed-key"
    malformed.write_text("sk-proj-pasted-by-mistake\n")
    malformed.chmod(0o600)
    line = assert_one_line_error(
        actionq("worker", "--agent", secret_key_file=str(malformed)), "does not hold a Fernet key"
    )
    assert "pasted" not in line


# --- tool modules in the current folder ------------------------------------------

MY_TOOLS = '''
from pydantic import BaseModel

from actionq.tools import ToolContext, tool


class ShoutArgs(BaseModel):
    text: str


@tool("shout", ShoutArgs)
def shout(args: ShoutArgs, ctx: ToolContext) -> dict[str, str]:
    """Say it louder."""
    return {"output": args.text.upper()}
'''


def test_tool_module_in_the_current_folder_is_found(tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(MY_TOOLS)
    result = actionq("tools", cwd=tmp_path, tool_modules="mytools")
    assert result.returncode == 0, result.stderr
    assert "shout" in result.stdout and "Say it louder." in result.stdout


def test_missing_tool_module_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(actionq("tools", cwd=tmp_path, tool_modules="nosuch"), "'nosuch'")


# --- client commands -------------------------------------------------------------


def client_command(stack: UpProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return actionq(*args, "--url", stack.url, "--api-key", stack.key)


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON error a --json command printed on stderr (exit 1, stdout empty)."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    error: dict[str, Any] = json.loads(result.stderr)["error"]
    assert set(error) == {"status", "code", "message"}
    return error


def test_unreachable_api_says_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = assert_one_line_error(actionq("conversations", "list", "--url", url))
    assert line.startswith(f"error: cannot reach the actionq API at {url}")
    assert "is `actionq up` running here?" in line and "ACTIONQ_API_URL / --url" in line
    error = json_error(actionq("conversations", "list", "--url", url, "--json"))
    assert error["code"] == "unreachable" and error["status"] is None
    assert "is `actionq up` running here?" in error["message"]


def test_json_errors_are_json(stack: UpProcess) -> None:
    cid = json.loads(client_command(stack, "conversations", "create", "--json").stdout)["id"]
    refused = json_error(client_command(stack, "conversations", "resume", cid, "--json"))
    assert refused["status"] == 409 and refused["code"] == "invalid_transition"
    missing = json_error(client_command(stack, "conversations", "show", "nope", "--json"))
    assert missing["status"] == 404
    bad = json_error(
        client_command(stack, "conversations", "submit", cid, "terminal", "{", "--json")
    )
    assert bad["code"] == "bad_parameter" and "not JSON" in bad["message"]
    typo = json_error(
        actionq("conversations", "list", "--url", stack.url, "--json", redis_ulr="redis://x")
    )
    assert typo["code"] == "configuration_error" and "ACTIONQ_REDIS_URL" in typo["message"]
    # Without --json the same errors stay one readable line.
    line = assert_one_line_error(client_command(stack, "conversations", "resume", cid))
    assert line.startswith("error: 409 invalid_transition:")


def submit(stack: UpProcess, cid: str, tool: str, arguments: dict[str, Any]) -> str:
    result = client_command(
        stack, "conversations", "submit", cid, tool, json.dumps(arguments), "--json"
    )
    assert result.returncode == 0, result.stderr
    action_id: str = json.loads(result.stdout)["id"]
    return action_id


def wait_for_status(stack: UpProcess, cid: str, status: str) -> None:
    client = stack.client()
    try:
        wait_for(
            lambda: client.get_conversation(cid)["execution_status"] == status, 30, what=status
        )
    finally:
        client.close()


def rows_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_action_ids_are_shown_and_actions_show_finds_them(stack: UpProcess, tmp_path: Path) -> None:
    cid = json.loads(client_command(stack, "conversations", "create", "--json").stdout)["id"]
    ran = submit(stack, cid, "terminal", {"command": "echo hi"})
    wait_for_status(stack, cid, "idle")
    crashed = submit(stack, cid, "kill_own_process", {"marker_file": str(tmp_path / "m")})
    wait_for_status(stack, cid, "error")

    shown = client_command(stack, "conversations", "show", cid)
    assert shown.returncode == 0, shown.stderr
    assert any(ran in row for row in rows_with(shown.stdout, "ActionEvent"))
    assert any(crashed in row for row in rows_with(shown.stdout, "AgentErrorEvent"))

    as_json = client_command(stack, "actions", "show", crashed, "--json")
    assert as_json.returncode == 0, as_json.stderr
    action = json.loads(as_json.stdout)
    assert action["id"] == crashed and action["state"] == "errored"
    assert action["conversation_id"] == cid
    human = client_command(stack, "actions", "show", crashed)
    assert human.returncode == 0, human.stderr
    assert crashed in human.stdout and cid in human.stdout
    assert "kill_own_process" in human.stdout and "errored" in human.stdout
    assert_one_line_error(client_command(stack, "actions", "show", "nope"), "404")

    # No terminal (a pipe): ids are never cut to fit 80 columns.
    listed = client_command(stack, "conversations", "list")
    assert listed.returncode == 0, listed.stderr
    assert rows_with(listed.stdout, cid)


def test_event_details_are_cut_at_a_word_and_show_only_known_signals(
    stack: UpProcess, tmp_path: Path
) -> None:
    cid = json.loads(client_command(stack, "conversations", "create", "--json").stdout)["id"]
    words = " ".join(f"w{i:04}x" for i in range(60))
    submit(stack, cid, "terminal", {"command": f"echo {words}"})
    submit(stack, cid, "raise_error", {"message": "boom"})
    wait_for_status(stack, cid, "idle")
    submit(stack, cid, "kill_own_process", {"marker_file": str(tmp_path / "m")})
    wait_for_status(stack, cid, "error")

    shown = client_command(stack, "conversations", "show", cid)
    assert shown.returncode == 0, shown.stderr
    (call,) = [row for row in rows_with(shown.stdout, "ActionEvent") if "terminal" in row]
    (output,) = rows_with(shown.stdout, "ObservationEvent")
    for row in (call, output):  # long: cut after a whole word, with an ellipsis
        assert re.search(r"w\d{4}x…", row), row
        assert not re.search(r"w\d{0,3}…|w\d{4}…", row), row
    raised, crashed = rows_with(shown.stdout, "AgentErrorEvent")
    assert "tool_exception: tool 'raise_error' raised RuntimeError: boom" in raised
    assert "signal" not in raised
    assert "worker_lost (signal 9)" in crashed
    assert "None" not in shown.stdout


def test_quarantined_retry_says_to_use_force(stack: UpProcess, tmp_path: Path) -> None:
    cid = json.loads(client_command(stack, "conversations", "create", "--json").stdout)["id"]
    crashed = submit(stack, cid, "kill_own_process", {"marker_file": str(tmp_path / "m")})
    wait_for_status(stack, cid, "error")
    again = client_command(stack, "conversations", "retry", crashed, "--json")
    assert again.returncode == 0, again.stderr
    wait_for_status(stack, cid, "error")
    client = stack.client()
    wait_for(lambda: client.get_action(json.loads(again.stdout)["id"])["state"] == "errored")
    client.close()

    refused = client_command(stack, "conversations", "retry", crashed)
    assert refused.returncode == 1
    error, hint = refused.stderr.strip().splitlines()
    assert error.startswith("error: 409 quarantined:")
    assert hint == "use --force to run it anyway"
    as_json = json_error(client_command(stack, "conversations", "retry", crashed, "--json"))
    assert as_json["code"] == "quarantined"
    forced = client_command(stack, "conversations", "retry", crashed, "--force", "--json")
    assert forced.returncode == 0, forced.stderr


def test_readme_python_example_runs_and_bounds_its_wait(
    settings_env: dict[str, str], start_worker: WorkerFactory
) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## Use it from Python", 1)[1].split("```python\n", 1)[1]
    example = example.split("```", 1)[0]
    assert "wait_for_action(action.id, timeout=" in example  # no hidden 60 s limit
    start_worker()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")} | settings_env
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=120,
        cwd=ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ObservationEvent" in result.stdout


def test_settings_table_says_which_key_setting_is_for_whom() -> None:
    table = actionq("config", "--markdown").stdout
    (keys,) = rows_with(table, "| `ACTIONQ_API_KEYS` |")
    (key,) = rows_with(table, "| `ACTIONQ_API_KEY` |")
    assert "Server" in keys and "ACTIONQ_API_KEY`" in keys
    assert "Clients" in key and "ACTIONQ_API_KEYS" in key


# --- the agent loop from the command line ---------------------------------------


def test_an_agent_conversation_driven_from_the_command_line(
    stack: UpProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "agent-marks"

    def mark(line: str) -> dict[str, Any]:
        arguments = {"marker_file": str(marker), "line": line, "seconds": 0}
        return {"tool": "sleep_after_mark", "arguments": arguments}

    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"tool_calls": [mark("x")]},
                {"text": "rejected: {last_result}", "tool_calls": [mark("y")]},
                {"text": "all done"},
            ]
        )
    )
    conversations = ("conversations",)
    created = client_command(
        stack, *conversations, "create", "--agent-script", str(script), "--confirm", "always"
    )
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()

    sent = client_command(stack, *conversations, "message", cid, "careful", "--run")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(f"{cid} "), sent.stdout
    wait_for_status(stack, cid, "waiting_for_confirmation")
    shown = client_command(stack, *conversations, "show", cid)
    assert shown.returncode == 0, shown.stderr
    assert "(agent, iteration 1, 1 call to confirm)" in shown.stdout, shown.stdout
    assert f"`actionq conversations confirm {cid}` runs it" in shown.stdout
    assert rows_with(shown.stdout, "user: careful")

    rejected = client_command(stack, *conversations, "reject", cid, "--reason", "not that one")
    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stdout.strip() == f"{cid} idle"
    again = client_command(stack, *conversations, "reject", cid, "--json")
    assert json_error(again)["status"] == 409  # nothing waits any more

    ran = client_command(stack, *conversations, "run", cid)
    assert ran.returncode == 0, ran.stderr
    wait_for_status(stack, cid, "waiting_for_confirmation")
    confirmed = client_command(stack, *conversations, "confirm", cid, "--json")
    assert confirmed.returncode == 0, confirmed.stderr
    assert json.loads(confirmed.stdout)["id"] == cid
    wait_for_status(stack, cid, "finished")
    assert marker.read_text().splitlines() == ["y"]  # the rejected call never ran

    events = json.loads(client_command(stack, *conversations, "show", cid, "--json").stdout)
    shown = [e["event"] for e in events["events"]]
    (rejection,) = [e for e in shown if e["kind"] == "UserRejectObservation"]
    assert rejection["rejection_reason"] == "not that one"
    human = client_command(stack, *conversations, "show", cid).stdout
    assert rows_with(human, "agent: all done") and "to confirm" not in human
    listed = client_command(stack, *conversations, "list")
    (row,) = rows_with(listed.stdout, cid)
    assert "finished" in row and "agent, iteration" in row

    # The policy, and a first message that runs at once.
    assert client_command(stack, *conversations, "policy", cid, "never").returncode == 0
    quick = client_command(
        stack, *conversations, "create", "--agent-script", str(script), "--message", "go",
        "--max-iterations", "5", "--json",
    )  # fmt: skip
    assert quick.returncode == 0, quick.stderr
    quick_cid = json.loads(quick.stdout)["id"]
    wait_for_status(stack, quick_cid, "finished")
    assert marker.read_text().splitlines() == ["y", "x", "y"]


def test_agent_options_mistakes_are_one_line(stack: UpProcess, tmp_path: Path) -> None:
    plain = client_command(stack, "conversations", "create", "--confirm", "always")
    assert plain.returncode == 2 and "need an agent" in plain.stderr
    script = tmp_path / "broken.json"
    script.write_text('[{"txt": "hi"}]')
    broken = client_command(stack, "conversations", "create", "--agent-script", str(script))
    assert broken.returncode == 2 and str(script) in broken.stderr and "txt" in broken.stderr
    assert "Traceback" not in broken.stderr
    as_json = json_error(
        client_command(stack, "conversations", "create", "--agent-script", str(script), "--json")
    )
    assert as_json["code"] == "bad_parameter" and str(script) in as_json["message"]
    cid = json.loads(client_command(stack, "conversations", "create", "--json").stdout)["id"]
    no_agent = client_command(stack, "conversations", "policy", cid, "always")
    line = assert_one_line_error(no_agent, "409")
    assert "no agent" in line
