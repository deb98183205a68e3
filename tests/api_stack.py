"""A real `actionq up` (embedded server, real worker, uvicorn) as a
subprocess, for the API tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.client import ApiClient
from tests.helpers import ROOT, free_port, wait_for

__all__ = ["UpProcess", "running", "start_up", "stop_up"]


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


def start_up(data_dir: Path, log: Path, extra_env: dict[str, str] | None = None) -> UpProcess:
    port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        | {
            "PYTHONPATH": str(ROOT),
            "ACTIONQ_TOOL_MODULES": "tests.tools_for_tests",
            "ACTIONQ_WORKDIR": str(data_dir.parent),
            "ACTIONQ_VISIBILITY_TIMEOUT": "5",
            "ACTIONQ_UNACKED_RESTORE_INTERVAL": "1",
            "ACTIONQ_API_MAX_BODY_BYTES": "65536",
        }
        | (extra_env or {})
    )
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "up", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"actionq up exited:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, 0.2, "actionq up to be healthy")
    given = env.get("ACTIONQ_API_KEYS", "").split(",")[0]
    key = given or (data_dir / "api-key").read_text().strip()
    return UpProcess(process, url, key, data_dir, log)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def stop_up(up: UpProcess) -> int:
    if up.process.poll() is None:
        up.process.send_signal(signal.SIGINT)
        try:
            return up.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.process.pid, signal.SIGKILL)
    return up.process.wait(10)
