"""The secret key's setting (ACTIONQ_SECRET_KEY_FILE) with real workers: a
tool worker started by hand with it set never hands it to a tool (started
with `actionq worker`, it is not even in its /proc environment), and an agent
worker refuses to start with an unusable key file, naming the problem and
not the file's content."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from actionq.local.processes import stop_process
from actionq.models import ObservationEvent
from actionq.service import ActionQ
from tests.conftest import WorkerFactory
from tests.events import terminal_events
from tests.helpers import ROOT, wait_for


def key_file(path: Path, mode: int = 0o600) -> Path:
    path.write_bytes(Fernet.generate_key() + b"\n")
    path.chmod(mode)
    return path


def tool_sees(aq: ActionQ) -> tuple[list[str], str]:
    """The ACTIONQ_* names an in-process tool sees, and a command's `env`."""
    cid = aq.create_conversation().id
    names = aq.submit_action(cid, "own_environ_names", {})
    env = aq.submit_action(cid, "terminal", {"command": "env"})
    aq.wait_for_action(env.id, 30)
    aq.wait_for_action(names.id, 30)
    observations = []
    for action in (names, env):
        [event] = terminal_events(aq, cid, action.id)
        assert isinstance(event, ObservationEvent), event
        observations.append(event.observation)
    return list(observations[0]["names"]), str(observations[1]["output"])  # type: ignore[call-overload]


def proc_environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def test_a_tool_worker_started_with_the_key_file_drops_it(
    aq: ActionQ, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """`celery -A actionq worker` run by hand, ACTIONQ_SECRET_KEY_FILE set:
    its tools never see it, and its log says it was dropped."""
    path = key_file(tmp_path / "secret-key")
    worker = start_worker(ACTIONQ_SECRET_KEY_FILE=str(path), ACTIONQ_SECRET_KEY_FILE_OLD=str(path))
    names, env = tool_sees(aq)
    assert "ACTIONQ_REDIS_URL" in names  # the listing works
    assert [name for name in names if name.startswith("ACTIONQ_SECRET")] == []
    assert "PATH=" in env and "ACTIONQ_" not in env and str(path) not in env
    dropped = (
        "ACTIONQ_SECRET_KEY_FILE, ACTIONQ_SECRET_KEY_FILE_OLD: dropped, this worker runs tools"
    )
    assert dropped in worker.log()
    assert path.read_text().strip() not in worker.log()


def test_actionq_worker_leaves_the_key_file_out_of_a_tool_workers_environment(
    aq: ActionQ, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """As a shell after `eval "$(actionq env)"` starts one: the variable is
    not in the worker's /proc/<pid>/environ, which its commands could read."""
    path = key_file(tmp_path / "secret-key")
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env = base | settings_env | {"PYTHONPATH": str(ROOT), "ACTIONQ_SECRET_KEY_FILE": str(path)}
    log_path = tmp_path / "cli-worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "actionq", "worker", "-c", "1", "--hostname", "cli@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert worker.poll() is None, log_path.read_text()[-3000:]
            return " ready." in log_path.read_text(errors="replace")

        wait_for(ready, 30, 0.1, "the worker to be ready")
        environ = proc_environ(worker.pid)  # execve kept the pid: this is celery
        assert "celery" in Path(f"/proc/{worker.pid}/cmdline").read_text()
        assert environ["ACTIONQ_REDIS_URL"] == settings_env["ACTIONQ_REDIS_URL"]
        assert "ACTIONQ_SECRET_KEY_FILE" not in environ
        names, _ = tool_sees(aq)
        assert "ACTIONQ_SECRET_KEY_FILE" not in names
        assert "dropped" not in log_path.read_text()  # nothing left to drop
    finally:
        stop_process(worker, 10, kill_group=True, kill_timeout=10)


@pytest.mark.parametrize("problem", ["others may read it", "no key in it"])
def test_an_agent_worker_refuses_an_unusable_key_file(
    start_worker: WorkerFactory, tmp_path: Path, problem: str
) -> None:
    path = tmp_path / "secret-key"
    if problem == "others may read it":
        key_file(path, 0o644)
        expected = f"{path} is accessible by group or others (mode 0644)"
    else:
        path.write_text("sk-an-llm-key-pasted-here\n")
        path.chmod(0o600)
        expected = f"{path} does not hold a Fernet key"
    worker = start_worker(agent=True, wait=False, ACTIONQ_SECRET_KEY_FILE=str(path))
    assert worker.process is not None
    assert worker.process.wait(30) != 0
    log = worker.log()
    assert "actionq worker cannot start: ACTIONQ_SECRET_KEY_FILE: " in log and expected in log
    assert path.read_text().strip() not in log
