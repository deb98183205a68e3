"""What tools can reach and leave behind, with real prefork workers: the
environment of their commands, actionq's data folder, files that would block,
background processes, and process groups recorded long ago."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from actionq.crashes.stop import kill_leftover_processes
from actionq.models import ErrorCause, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.store import Claim, WorkerIdentity
from actionq.tools import conversation_workspace
from actionq.tools.sandbox import (
    CommandCgroup,
    ProcessGroup,
    boot_id,
    process_start_ticks,
)
from tests.conftest import WorkerFactory
from tests.events import only_error, terminal_events
from tests.helpers import ValkeyServer, wait_for


def observation(aq: ActionQ, cid: str, action_id: str) -> dict[str, object]:
    [event] = terminal_events(aq, cid, action_id)
    assert isinstance(event, ObservationEvent), event
    return event.observation


def live_processes_with(marker: str) -> list[psutil.Process]:
    """Processes (not zombies) whose command line holds ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def cgroups_available() -> bool:
    probe = CommandCgroup.create(f"actionq-probe-{os.getpid()}")
    if probe is None:
        return False
    probe.remove()
    return True


@pytest.fixture
def unrelated_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session that no action started."""
    proc = subprocess.Popen(["sleep", "123.470"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(5)


# -- 1. the environment ----------------------------------------------------


def test_terminal_commands_get_no_secrets(
    start_worker: WorkerFactory, tmp_path: Path, workdir: Path
) -> None:
    password = "pw-7c1e9f"
    api_key = "key-5b2d8a"
    server = ValkeyServer(tmp_path / "valkey-auth")
    server.start()
    try:
        redis.Redis(port=server.port).config_set("requirepass", password)
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        aq = ActionQ(Settings(redis_url=url, workdir=str(workdir)))
        start_worker(
            ACTIONQ_REDIS_URL=url,
            ACTIONQ_API_KEYS=api_key,
            ACTIONQ_TOOL_ENV_ALLOW="SANDBOX_TEST_*",
            SANDBOX_TEST_VISIBLE="yes",
            SANDBOX_TEST_PASSWORD="hidden",
        )
        cid = aq.create_conversation().id
        env_action = aq.submit_action(cid, "terminal", {"command": "env"})
        names_action = aq.submit_action(cid, "own_environ_names", {})
        aq.wait_for_action(names_action.id, 30)

        output = str(observation(aq, cid, env_action.id)["output"])
        assert "PATH=" in output
        assert "SANDBOX_TEST_VISIBLE=yes" in output
        for leaked in (password, api_key, "ACTIONQ_", "SANDBOX_TEST_PASSWORD"):
            assert leaked not in output
        # In-process tools are trusted code: they share the worker's environment,
        # which needs the Redis URL, but not the API keys (the worker drops them).
        names = observation(aq, cid, names_action.id)["names"]
        assert "ACTIONQ_REDIS_URL" in names  # type: ignore[operator]
        assert "ACTIONQ_API_KEYS" not in names  # type: ignore[operator]
        aq.close()
    finally:
        server.stop()


def test_model_keys_never_reach_terminal_commands(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """Every model profile's key variable is dropped from a command's
    environment, even when ACTIONQ_TOOL_ENV_ALLOW lists it by name."""
    profiles = tmp_path / "profiles.json"
    profiles.write_text('{"local": {"model": "openai/m", "api_key_env": "SANDBOX_LOCAL_KEY"}}')
    start_worker(
        ACTIONQ_MODEL="openai/gpt-4o-mini",
        ACTIONQ_MODEL_API_KEY_ENV="SANDBOX_MODEL_KEY",
        ACTIONQ_MODEL_PROFILES_FILE=str(profiles),
        ACTIONQ_TOOL_ENV_ALLOW="SANDBOX_MODEL_KEY,SANDBOX_LOCAL_KEY,SANDBOX_PLAIN",
        SANDBOX_MODEL_KEY="sk-model-3f9a1c",
        SANDBOX_LOCAL_KEY="sk-local-8e2b7d",
        SANDBOX_PLAIN="plain-value",
    )
    cid = aq.create_conversation().id
    env_action = aq.submit_action(cid, "terminal", {"command": "env"})
    aq.wait_for_action(env_action.id, 30)
    output = str(observation(aq, cid, env_action.id)["output"])
    assert "SANDBOX_PLAIN=plain-value" in output  # the allow-list itself works
    for leaked in ("sk-model-3f9a1c", "sk-local-8e2b7d", "SANDBOX_MODEL_KEY", "SANDBOX_LOCAL_KEY"):
        assert leaked not in output


# -- 3. files that would block ---------------------------------------------


def test_file_tools_refuse_a_fifo_at_once_and_the_worker_goes_on(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    os.mkfifo(conversation_workspace(settings, cid) / "pipe")
    started = time.monotonic()
    read = aq.submit_action(cid, "file_read", {"path": "pipe"})
    write = aq.submit_action(cid, "file_write", {"path": "pipe", "content": "x"})
    edit = aq.submit_action(cid, "file_edit", {"path": "pipe", "old_str": "a", "new_str": "b"})
    after = aq.submit_action(cid, "terminal", {"command": "echo next"})
    aq.wait_for_action(after.id, 20)
    assert time.monotonic() - started < 15

    for action in (read, write, edit):
        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
        assert "'pipe' is not a regular file" in error.error
    assert observation(aq, cid, after.id)["output"] == "next\n"


# -- 2. the data folder ------------------------------------------------------


def test_the_data_folder_beside_the_workspaces_is_out_of_the_file_tools_reach(
    aq: ActionQ, settings: Settings, start_worker: WorkerFactory, workdir: Path
) -> None:
    # The old layout of a worker started in a checkout: the data folder in
    # the workspace root. Each conversation's folder is beside it, not above.
    data_dir = workdir / ".actionq"
    data_dir.mkdir()
    (data_dir / "api-key").write_text("key-secret")
    start_worker(ACTIONQ_DATA_DIR=str(data_dir))
    cid = aq.create_conversation().id
    workspace = conversation_workspace(settings, cid)
    (workspace / "keys").symlink_to(data_dir)
    refused = [
        aq.submit_action(cid, "file_read", {"path": ".actionq/api-key"}),
        aq.submit_action(cid, "file_read", {"path": "../.actionq/api-key"}),
        aq.submit_action(cid, "file_read", {"path": "keys/api-key"}),
        aq.submit_action(cid, "file_write", {"path": "../.actionq/api-key", "content": "x"}),
        aq.submit_action(cid, "file_write", {"path": "keys/new/file", "content": "x"}),
    ]
    allowed = aq.submit_action(cid, "file_write", {"path": "notes.txt", "content": "ok"})
    aq.wait_for_action(allowed.id, 30)

    for action in refused:
        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
        assert "does not exist in the workspace" in error.error or (
            "outside the workspace" in error.error
        ), error.error
        assert "key-secret" not in error.error
    assert (data_dir / "api-key").read_text() == "key-secret"
    assert not (data_dir / "new").exists()
    assert observation(aq, cid, allowed.id)["bytes_written"] == 2


def test_no_tool_runs_with_the_data_folder_as_workspace_root(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    (workdir / "api-key").write_text("key-secret")
    start_worker(ACTIONQ_DATA_DIR=str(workdir))  # = ACTIONQ_WORKDIR
    cid = aq.create_conversation().id
    actions = [
        aq.submit_action(cid, "terminal", {"command": "cat ../api-key"}),
        aq.submit_action(cid, "file_read", {"path": "../api-key"}),
    ]
    aq.wait_for_action(actions[-1].id, 30)
    for action in actions:
        error = only_error(aq, cid, action.id)
        assert error.detail.cause == ErrorCause.TOOL_EXCEPTION
        assert "is actionq's data folder" in error.error and "ACTIONQ_WORKDIR" in error.error
        assert "key-secret" not in error.error
    assert not (workdir / cid).exists()


def test_a_workspace_root_inside_the_data_folder_stays_usable(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    root = data_dir / "workspace"  # `actionq up`'s layout
    (data_dir / "api-key").parent.mkdir(parents=True)
    (data_dir / "api-key").write_text("key-secret")
    start_worker(ACTIONQ_DATA_DIR=str(data_dir), ACTIONQ_WORKDIR=str(root))
    cid = aq.create_conversation().id
    inside = aq.submit_action(cid, "file_write", {"path": "a.txt", "content": "ok"})
    outside = aq.submit_action(cid, "file_read", {"path": "../../api-key"})
    aq.wait_for_action(outside.id, 30)
    assert observation(aq, cid, inside.id)["bytes_written"] == 2
    assert (root / cid / "a.txt").read_text() == "ok"
    assert "outside the workspace" in only_error(aq, cid, outside.id).error


# -- 4. background processes -----------------------------------------------


def test_background_processes_end_with_the_command(
    aq: ActionQ, start_worker: WorkerFactory
) -> None:
    start_worker()
    cid = aq.create_conversation().id
    # The subshell holds the output pipe open; the redirected one does not.
    command = "(sleep 123.456) & (sleep 123.461 >/dev/null 2>&1 &) ; echo started"
    action = aq.submit_action(cid, "terminal", {"command": command})
    aq.wait_for_action(action.id, 30)
    result = observation(aq, cid, action.id)
    assert result["output"] == "started\n"
    assert result["exit_code"] == 0 and not result["timed_out"]
    assert float(result["duration_s"]) < 5  # type: ignore[arg-type]
    assert live_processes_with("sleep 123.456") == []
    assert live_processes_with("sleep 123.461") == []


@pytest.mark.skipif(
    not cgroups_available(), reason="needs a writable cgroup v2 (setsid escapes a process group)"
)
def test_setsid_does_not_escape_the_command_or_a_crash(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    worker = start_worker()
    cid = aq.create_conversation().id
    ended = aq.submit_action(cid, "terminal", {"command": "setsid sleep 123.457 & echo ok"})
    aq.wait_for_action(ended.id, 30)
    assert observation(aq, cid, ended.id)["output"] == "ok\n"
    assert live_processes_with("sleep 123.457") == []

    # The pool child dies while the command runs: its escaped daemon goes too.
    crashing = aq.submit_action(
        cid, "terminal", {"command": "setsid sleep 123.458 >/dev/null 2>&1 & sleep 60"}
    )
    wait_for(lambda: live_processes_with("sleep 123.458"), 20, what="the daemon to start")
    [child] = worker.children()
    child.kill()
    aq.wait_for_action(crashing.id, 30)
    assert only_error(aq, cid, crashing.id).detail.cause == ErrorCause.WORKER_LOST
    # The worker's main process kills the cgroup right after it records the error.
    wait_for(lambda: not live_processes_with("sleep 123.458"), 10, what="the daemon to die")
    cgroup = aq.get_action(crashing.id).cgroup
    assert cgroup
    wait_for(lambda: not Path(cgroup).exists(), 10, what="the cgroup to be removed")


# -- 5. process groups recorded long ago -----------------------------------


def plant_group(aq: ActionQ, group: ProcessGroup) -> tuple[str, str]:
    """A conversation whose action is claimed by a dead worker on this host,
    with ``group`` recorded; returns (conversation id, action id)."""
    cid = aq.create_conversation().id
    gone = WorkerIdentity(
        id=f"gone@{socket.gethostname()}:1:dead", host=socket.gethostname(), pid=1
    )
    action_id = aq.store.submit_action(cid, "terminal", {"command": "sleep 600"}).action_id
    assert isinstance(aq.store.claim_action(cid, action_id, gone), Claim)
    aq.store.record_process_group(cid, action_id, group)
    return cid, action_id


def test_a_reused_pgid_is_not_killed(
    aq: ActionQ, unrelated_process: subprocess.Popen[bytes]
) -> None:
    pid = unrelated_process.pid
    started = process_start_ticks(pid)
    assert started is not None
    for planted in (
        ProcessGroup(pid, started - 1, boot_id()),  # the pid now names another process
        ProcessGroup(pid, started, "another-boot"),  # recorded before a reboot
        ProcessGroup(pid, None, None),  # recorded without an identity
    ):
        kill_leftover_processes(aq.get_action(plant_group(aq, planted)[1]))
        assert unrelated_process.poll() is None, planted
    # The recorded leader itself is killed.
    kill_leftover_processes(
        aq.get_action(plant_group(aq, ProcessGroup(pid, started, boot_id()))[1])
    )
    assert unrelated_process.wait(5) is not None


def test_start_up_recovery_spares_a_reused_pgid(
    aq: ActionQ, start_worker: WorkerFactory, unrelated_process: subprocess.Popen[bytes]
) -> None:
    started = process_start_ticks(unrelated_process.pid)
    assert started is not None
    cid, action_id = plant_group(aq, ProcessGroup(unrelated_process.pid, started - 7, boot_id()))
    start_worker()
    aq.wait_for_action(action_id, 20)
    assert only_error(aq, cid, action_id).detail.cause == ErrorCause.LEASE_EXPIRED
    assert unrelated_process.poll() is None
