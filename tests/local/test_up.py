"""`actionq up` as its users meet it: real `up` subprocesses on free ports,
data folders in tmp_path, real kills and signals."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from actionq.local.data_folder import process_start_time
from tests.events import count_lines, sdk_events, text_of, tool_result
from tests.helpers import ROOT, free_port, wait_for
from tests.up_process import (
    UpProcess,
    is_running,
    kill_up,
    launch_up,
    recorded_pid,
    start_up,
    stop_up,
    up_env,
)


@pytest.fixture
def started() -> Iterator[list[UpProcess]]:
    """`up`s a test started; SIGKILLed (whole group) if the test left them."""
    ups: list[UpProcess] = []
    yield ups
    for up in ups:
        kill_up(up)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """One `up` with its defaults (no ACTIONQ_WORKDIR), started from this
    checkout, with a data folder path longer than 80 columns."""
    base = tmp_path_factory.mktemp("local") / ("a-long-folder-name-" * 4)
    base.mkdir()
    up = start_up(base / ".actionq", base / "up.log", ACTIONQ_WORKDIR=None)
    yield up
    stop_up(up)


def _run_action(up: UpProcess, tool: str, arguments: dict[str, object]) -> dict[str, Any]:
    """The observation (OpenHands' JSON) of one call in a new conversation."""
    client = up.client()
    try:
        cid = client.create_conversation()["id"]
        action = client.submit_action(cid, {"tool": tool, "arguments": arguments})
        wait_for(
            lambda: client.get_conversation(cid)["execution_status"] == "idle", 60, 0.1,
            f"{tool} to run",
        )  # fmt: skip
        events = sdk_events(client.all_events(cid))
        [observation] = [e for e in events if e["kind"] == "ObservationEvent"]
        assert observation["action_id"] == action["id"]
        return dict(observation["observation"])
    finally:
        client.close()


def _exited(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    return process.wait(timeout)


def process_environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (what its user can read in /proc)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


# 1. One `up` per folder.


def test_a_second_up_on_the_same_folder_refuses_and_touches_nothing(
    tmp_path: Path, started: list[UpProcess]
) -> None:
    data_dir = tmp_path / ".actionq"
    first = start_up(data_dir, tmp_path / "up.log")
    started.append(first)
    worker_pid = recorded_pid(data_dir / "worker.pid")
    server_pid = recorded_pid(data_dir / "redis" / "server.pid")
    connection = (data_dir / "api.json").read_text()

    second_log = tmp_path / "second.log"
    second = launch_up(data_dir, second_log, free_port(), up_env(data_dir))
    try:
        assert _exited(second) != 0
    finally:  # if it did start, it must not outlive the test
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(10)
    [line] = second_log.read_text().strip().splitlines()
    assert f"pid {first.process.pid}" in line and first.url in line, line

    assert is_running(worker_pid) and is_running(server_pid)
    assert recorded_pid(data_dir / "worker.pid") == worker_pid
    assert (data_dir / "api.json").read_text() == connection
    assert httpx.get(first.url + "/health", timeout=5).status_code == 200
    assert stop_up(first) == 0


# 3. SIGTERM = Ctrl-C.


def test_sigterm_is_a_warm_shutdown_running_actions_finish(
    tmp_path: Path, started: list[UpProcess]
) -> None:
    data_dir = tmp_path / ".actionq"
    up = start_up(data_dir, tmp_path / "up.log")
    started.append(up)
    client = up.client()
    cid = client.create_conversation()["id"]
    marker = tmp_path / "sleep.log"
    action = client.submit_action(
        cid, {"tool": "sleep_after_mark", "arguments": {"marker_file": str(marker), "seconds": 3}}
    )
    wait_for(lambda: count_lines(marker) == 1, 30, what="the action to start")
    client.close()
    secret_key = (data_dir / "secret-key").read_bytes()

    assert stop_up(up, signal.SIGTERM) == 0
    assert "stopping: worker" in up.output()

    again = start_up(data_dir, tmp_path / "up2.log")
    started.append(again)
    # The secret key outlives a restart: what it sealed still opens.
    assert (data_dir / "secret-key").read_bytes() == secret_key
    client = again.client()
    kinds = [(e["kind"], e.get("action_id")) for e in sdk_events(client.all_events(cid))]
    assert ("ObservationEvent", action["id"]) in kinds, kinds
    assert "AgentErrorEvent" not in [kind for kind, _ in kinds]
    assert client.get_conversation(cid)["execution_status"] == "idle"
    client.close()
    assert count_lines(marker) == 1


# 4. The API port is checked before anything starts.


def test_a_port_in_use_stops_up_before_anything_is_written(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / ".actionq"
        log = tmp_path / "up.log"
        process = launch_up(data_dir, log, port, up_env(data_dir))
        try:
            assert _exited(process) != 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    [line] = log.read_text().strip().splitlines()
    assert str(port) in line and "in use" in line, line
    assert not data_dir.exists()


def test_the_data_folder_as_workspace_root_stops_up_before_anything_is_written(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ".actionq"
    for root in (data_dir, data_dir / "redis"):
        log = tmp_path / f"up-{root.name}.log"
        process = launch_up(data_dir, log, free_port(), up_env(data_dir, ACTIONQ_WORKDIR=str(root)))
        try:
            assert _exited(process) != 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        [line] = log.read_text().strip().splitlines()
        assert line.startswith(f"actionq up: the workspace root {root}") and "data folder" in line
    assert not data_dir.exists()  # nothing written, nothing started


def test_an_unusable_secret_key_file_stops_up_before_anything_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / ".actionq"
    shared = tmp_path / "shared-key"
    shared.write_text("Zm9v" * 11 + "\n")  # 44 characters, but no key
    shared.chmod(0o644)
    cases = {
        str(tmp_path / "missing-key"): "cannot read",  # named by the user: never made
        str(shared): "mode 0644",
    }
    for key_file, problem in cases.items():
        log = tmp_path / f"up-{Path(key_file).name}.log"
        env = up_env(data_dir, ACTIONQ_SECRET_KEY_FILE=key_file)
        process = launch_up(data_dir, log, free_port(), env)
        try:
            assert _exited(process) != 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        [line] = log.read_text().strip().splitlines()
        assert line.startswith("actionq up: ACTIONQ_SECRET_KEY_FILE: "), line
        assert key_file in line and problem in line, line
        assert "Zm9v" not in line
    assert not (tmp_path / "missing-key").exists()
    assert not (data_dir / "secret-key").exists()  # the user's file, not one of up's own
    assert not (data_dir / "redis").exists()  # refused before the server started


# 2. Supervision.


def test_a_killed_worker_is_restarted_and_new_actions_run_once(
    tmp_path: Path, started: list[UpProcess]
) -> None:
    data_dir = tmp_path / ".actionq"
    up = start_up(data_dir, tmp_path / "up.log")
    started.append(up)
    worker_pid = recorded_pid(data_dir / "worker.pid")
    os.kill(worker_pid, signal.SIGKILL)

    client = up.client()
    cid = client.create_conversation()["id"]
    marker = tmp_path / "after-kill.log"
    client.submit_action(
        cid, {"tool": "sleep_after_mark", "arguments": {"marker_file": str(marker), "seconds": 0}}
    )
    wait_for(
        lambda: client.get_conversation(cid)["execution_status"] == "idle", 60, 0.2, "the action"
    )
    client.close()
    assert count_lines(marker) == 1
    assert f"the worker (pid {worker_pid}) died (killed by SIGKILL)" in up.output()
    assert "the worker restarted" in up.output()
    assert recorded_pid(data_dir / "worker.pid") != worker_pid
    wait_for(lambda: httpx.get(up.url + "/health", timeout=5).status_code == 200, 30, what="health")
    assert stop_up(up) == 0


def test_a_killed_server_is_restarted_on_its_port_with_its_data(
    tmp_path: Path, started: list[UpProcess]
) -> None:
    data_dir = tmp_path / ".actionq"
    up = start_up(data_dir, tmp_path / "up.log")
    started.append(up)
    client = up.client()
    before = client.create_conversation()["id"]
    server_pid = recorded_pid(data_dir / "redis" / "server.pid")
    os.kill(server_pid, signal.SIGKILL)
    wait_for(lambda: "the server restarted" in up.output(), 30, 0.2, "the server to restart")
    assert f"the server (pid {server_pid}) died (killed by SIGKILL)" in up.output()

    def runs() -> bool:
        try:
            return client.get_conversation(before)["id"] == before
        except Exception:
            return False

    wait_for(runs, 30, 0.2, "the API to reach the restarted server")
    marker = tmp_path / "after-server-kill.log"
    client.submit_action(
        before,
        {"tool": "sleep_after_mark", "arguments": {"marker_file": str(marker), "seconds": 0}},
    )
    wait_for(lambda: count_lines(marker) >= 1, 60, 0.2, "an action after the restart")
    wait_for(lambda: client.get_conversation(before)["execution_status"] == "idle", 30, 0.2, "idle")
    client.close()
    assert count_lines(marker) == 1
    assert stop_up(up) == 0


# 5, 6, 12. The server's secrets and files.


def test_the_server_password_is_not_on_any_command_line(local: UpProcess) -> None:
    password = (local.data_dir / "redis" / "server.password").read_text().strip()
    server_pid = recorded_pid(local.data_dir / "redis" / "server.pid")
    with open(f"/proc/{server_pid}/cmdline", "rb") as f:
        assert password.encode() not in f.read()
    worker_pid = recorded_pid(local.data_dir / "worker.pid")
    with open(f"/proc/{worker_pid}/cmdline", "rb") as f:
        assert password.encode() not in f.read()
    # valkey overwrites its process title once started, so the cmdline above
    # hides an argv password after the first moments: check that the server
    # really read its settings from the private config file instead.
    config = local.data_dir / "redis" / "valkey.conf"
    client = redis.Redis.from_url((local.data_dir / "redis.url").read_text().strip())
    try:
        assert client.info("server")["config_file"] == str(config)
    finally:
        client.close()
    assert f"requirepass {password}" in config.read_text().splitlines()


def test_the_server_never_evicts(local: UpProcess) -> None:
    url = (local.data_dir / "redis.url").read_text().strip()
    client = redis.Redis.from_url(url)
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(1024**3)}
    finally:
        client.close()


def test_the_data_folder_is_private(local: UpProcess) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    folder = local.data_dir
    for private_dir in (folder, folder / "redis", folder / "workspace"):
        assert mode(private_dir) == 0o700, private_dir
    for secret in ("api-key", "api.json", "redis.url", "up.lock", "worker.pid", "secret-key",
                   "redis/server.password", "redis/valkey.conf", "redis/server.pid"):  # fmt: skip
        assert mode(folder / secret) == 0o600, secret
    for written_by_server in (folder / "redis").rglob("appendonly*"):
        assert mode(written_by_server) & 0o077 == 0, written_by_server


# 7. Pidfiles name processes by pid and start time, never by name.


def test_a_stale_pidfile_never_kills_an_unrelated_process(
    tmp_path: Path, started: list[UpProcess]
) -> None:
    unrelated = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "celery", "valkey-server"]
    )
    try:
        data_dir = tmp_path / ".actionq"
        (data_dir / "redis").mkdir(parents=True)
        (data_dir / "worker.pid").write_text(str(unrelated.pid))  # the old format
        start_time = process_start_time(unrelated.pid)
        assert start_time is not None
        (data_dir / "redis" / "server.pid").write_text(
            json.dumps({"pid": unrelated.pid, "start_time": start_time - 1})
        )
        up = start_up(data_dir, tmp_path / "up.log")
        started.append(up)
        assert unrelated.poll() is None and is_running(unrelated.pid)
        assert "left running" not in up.output()
        assert stop_up(up) == 0
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait(10)


# 8, 9. Where tools run; what `up` prints.


def test_tools_run_in_the_workspace_not_in_the_checkout(local: UpProcess) -> None:
    observation = _run_action(local, "terminal", {"command": "pwd; ls -a"})
    lines = text_of(observation["content"]).split()
    # The conversation's own folder in `<data>/workspace`, made 0700.
    folder = Path(lines[0])
    assert folder.parent == local.data_dir / "workspace"
    client = local.client()
    try:
        assert client.get_conversation(folder.name)["id"] == folder.name
    finally:
        client.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert "api-key" not in lines and "pyproject.toml" not in lines
    environ = process_environ(recorded_pid(local.data_dir / "worker.pid"))
    assert environ["ACTIONQ_DATA_DIR"] == str(local.data_dir)
    assert "ACTIONQ_API_KEYS" not in environ


def test_only_the_agent_worker_gets_the_secret_key_file(local: UpProcess) -> None:
    """The tool worker's environment (which its tools can read in /proc) and
    an in-process tool's lack ACTIONQ_SECRET_KEY_FILE; the agent worker has it."""
    key_file = local.data_dir / "secret-key"
    assert len(key_file.read_bytes().strip()) == 44  # a Fernet key, made by `up`
    tool_worker = process_environ(recorded_pid(local.data_dir / "worker.pid"))
    agent_worker = process_environ(recorded_pid(local.data_dir / "agent-worker.pid"))
    assert agent_worker["ACTIONQ_SECRET_KEY_FILE"] == str(key_file)
    assert "ACTIONQ_DATA_DIR" in tool_worker  # the same kind of listing, without the key
    assert not [name for name in tool_worker if name.startswith("ACTIONQ_SECRET")]
    names = tool_result(_run_action(local, "own_environ_names", {}))["names"]
    assert "ACTIONQ_DATA_DIR" in names
    assert "ACTIONQ_SECRET_KEY_FILE" not in names
    assert f"  secrets: sealed with the key in {key_file}  (back it up)" in local.output()


def test_up_prints_where_the_key_is_not_the_key_on_unwrapped_lines(local: UpProcess) -> None:
    output = local.output()
    assert local.key not in output
    lines = output.splitlines()
    key_line = f"  API key: in {local.data_dir / 'api-key'}  (header X-Session-API-Key)"
    assert key_line in lines, output
    # Not a terminal: no line is wrapped at 80 columns, even a long one.
    [state_line] = [line for line in lines if line.startswith("actionq up  state:")]
    assert state_line.endswith(f"data in {local.data_dir / 'redis'}"), output


def test_demo_leaves_no_temp_folder(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "actionq", "demo"],
        env=env | {"TMPDIR": str(temp)}, cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo passed" in result.stdout
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("cgroups", ["true", "false"])
def test_demo_tells_the_agent_story(tmp_path: Path, cgroups: str) -> None:
    """With the memory cap (a cgroup) the leak is a memory_limit crash;
    without one it kills its worker process: either way the conversation
    goes to error, the agent reads the crash, tries another way, finishes,
    and the leaking command ran once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "actionq", "demo", "--data-dir", str(tmp_path / "demo")],
        env=env | {"ACTIONQ_TOOL_CGROUPS": cgroups}, cwd=ROOT, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "demo passed" in out and "the leaking command ran 1x" in out
    expected_cause = "memory_limit" if cgroups == "true" else "worker_lost"
    assert f"error; {expected_cause}: the call is not re-run" in out
    assert "final status: finished" in out


# 10. Attaching to a running `up`.


def test_env_lets_a_python_client_see_the_conversations(local: UpProcess) -> None:
    client = local.client()
    cid = client.create_conversation()["id"]
    client.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    printed = subprocess.run(
        [sys.executable, "-m", "actionq", "env", "--data-dir", str(local.data_dir)],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    password = (local.data_dir / "redis" / "server.password").read_text().strip()
    assert password not in printed.stdout and local.key not in printed.stdout
    # The key file's path, for an agent worker started there; never the key.
    key_file = local.data_dir / "secret-key"
    assert f"export ACTIONQ_SECRET_KEY_FILE={shlex.quote(str(key_file))}" in printed.stdout
    assert key_file.read_text().strip() not in printed.stdout
    script = (
        f'eval "$({sys.executable} -m actionq env --data-dir {local.data_dir})" && '
        f"{sys.executable} -c 'from actionq import ActionQ; "
        f"print(*[c.id for c in ActionQ().list_conversations(limit=1000)])'"
    )
    listed = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert listed.returncode == 0, listed.stderr
    assert cid in listed.stdout.split()


def test_env_without_a_running_up_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "actionq", "env", "--data-dir", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no actionq up is running" in result.stderr and result.stdout == ""


def test_flower_asks_for_the_password_in_the_data_folder(local: UpProcess, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    with (tmp_path / "flower.log").open("ab") as log:
        flower = subprocess.Popen(
            [sys.executable, "-m", "actionq", "flower", "--data-dir", str(local.data_dir),
             "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def answers() -> int:
        assert flower.poll() is None, (tmp_path / "flower.log").read_text()
        try:
            return httpx.get(base + "/", timeout=2).status_code
        except httpx.HTTPError:
            return 0

    try:
        assert wait_for(answers, 60, 0.2, "Flower to answer") == 401
        password_file = local.data_dir / "flower.password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        assert httpx.get(base + "/", auth=("actionq", "wrong"), timeout=5).status_code == 401
        assert httpx.get(base + "/", auth=("actionq", password), timeout=5).status_code == 200
        with open(f"/proc/{flower.pid}/cmdline", "rb") as f:
            assert password.encode() not in f.read()
        assert "ACTIONQ_REDIS_URL" in process_environ(flower.pid)
        assert "ACTIONQ_SECRET_KEY_FILE" not in process_environ(flower.pid)
        assert password not in (tmp_path / "flower.log").read_text()
    finally:
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(10)
