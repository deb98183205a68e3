"""A real ``actionq up`` subprocess for the tests (tests/api/,
tests/local/): on a free port, with its data folder where the test says."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from actionq.cli.api_client import ApiClient
from actionq.local.attach import _secret_files, running_up
from actionq.local.processes import free_port, stop_process
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.helpers import ROOT, wait_for


@dataclass
class UpProcess:
    process: subprocess.Popen[bytes]
    url: str
    key: str
    data_dir: Path
    log: Path

    def client(self) -> ApiClient:
        return ApiClient(self.url, self.key)

    def headers(self) -> dict[str, str]:
        return {"X-Session-API-Key": self.key}

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def up_env(data_dir: Path, **overrides: str | None) -> dict[str, str]:
    """The environment the tests run ``up`` with; an override of None removes
    a variable (e.g. ``ACTIONQ_WORKDIR=None``: up's own default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")} | {
        "PYTHONPATH": str(ROOT),
        "ACTIONQ_TOOL_MODULES": "tests.tools_for_tests",
        "ACTIONQ_WORKDIR": str(data_dir.parent),
        "ACTIONQ_VISIBILITY_TIMEOUT": "5",
        "ACTIONQ_UNACKED_RESTORE_INTERVAL": "1",
        "ACTIONQ_API_MAX_BODY_BYTES": "65536",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def launch_up(
    data_dir: Path, log: Path, port: int, env: dict[str, str], cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "actionq", "up", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def start_up(data_dir: Path, log: Path, **env_overrides: str | None) -> UpProcess:
    port = free_port()
    process = launch_up(data_dir, log, port, up_env(data_dir, **env_overrides))
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"actionq up exited:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, 0.2, "actionq up to be healthy")
    given = env_overrides.get("ACTIONQ_API_KEYS") or ""
    key = given.split(",")[0] or (data_dir / "api-key").read_text().strip()
    return UpProcess(process, url, key, data_dir, log)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def recorded_pid(pidfile: Path) -> int:
    """The pid an ``up`` pidfile records (JSON: pid and start time; a bare
    pid from older versions)."""
    text = pidfile.read_text()
    return int(json.loads(text)["pid"]) if text.startswith("{") else int(text)


def stop_up(up: UpProcess, sig: int = signal.SIGINT) -> int:
    return stop_process(up.process, 60, sig, kill_group=True, kill_timeout=10)


def kill_up(up: UpProcess) -> None:
    """SIGKILL the whole process group of ``up`` (cleanup after a test)."""
    if up.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.process.pid, signal.SIGKILL)
    up.process.wait(10)


@dataclass
class ApiProcess:
    """A second HTTP API on a running ``up``: ``actionq api`` started from a
    shell that ran ``eval "$(actionq env)"``, on a port of its own, so a test
    can kill it (and start it again on the same port) while ``up``'s workers
    and its own API go on."""

    up: UpProcess
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        env["PYTHONPATH"] = str(ROOT)
        python = shlex.quote(sys.executable)
        script = (
            f'eval "$({python} -m actionq env --data-dir {shlex.quote(str(self.up.data_dir))})"'
            ' && export ACTIONQ_API_KEYS="$ACTIONQ_API_KEY"'
            f" && exec {python} -m actionq api --host 127.0.0.1 --port {self.port}"
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", script], cwd=ROOT, env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"actionq api exited:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(self.url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, 0.1, "actionq api to be healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown, open sockets just drop (as when its node dies)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@contextlib.contextmanager
def client_of(up: UpProcess) -> Iterator[ActionQ]:
    """A Python client of a running `up`, as `eval "$(actionq env)"` gives one."""
    folder, info = running_up(up.data_dir)
    values = dict(info.settings)
    values |= {name: path.read_text().strip() for name, path in _secret_files(folder).items()}
    fields = {
        name.removeprefix("ACTIONQ_").lower(): value
        for name, value in values.items()
        if name.removeprefix("ACTIONQ_").lower() in Settings.model_fields
    }
    with ActionQ(Settings(**fields)) as aq:
        yield aq
