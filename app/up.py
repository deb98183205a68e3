"""``actionq up``: the whole stack in one command.

With no ``ACTIONQ_REDIS_URL`` it starts an embedded Redis-compatible server
whose data (append-only file) lives in the data folder, then a worker and the
HTTP API. Ctrl-C stops everything it started, in order: the API, the worker
(warm shutdown: running actions finish), then the server (which flushes its
append-only file). Children also die with it if it is killed outright.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import uvicorn
from rich.console import Console

from app.embedded import EmbeddedServer
from app.processes import die_with_parent_hook, stop_pidfile_process, worker_command
from app.settings import Settings, load_settings

__all__ = ["run_up"]


def _api_key(data_dir: Path) -> str:
    path = data_dir / "api-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _write_connection_file(data_dir: Path, url: str, key: str) -> None:
    path = data_dir / "api.json"
    path.write_text(json.dumps({"url": url, "api_key": key}, indent=2))
    path.chmod(0o600)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_worker(settings: Settings, worker: subprocess.Popen[bytes], log: Path) -> None:
    from app.store import ActionStore

    store = ActionStore.from_url(settings.redis_url, settings.key_prefix)
    deadline = time.monotonic() + 60
    while not store.live_worker_ids():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start; see {log}")
        time.sleep(0.1)


def run_up(data_dir: Path, host: str, port: int, workers: int) -> None:
    console = Console()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    worker_pidfile = data_dir / "worker.pid"
    # Cold shutdown (SIGQUIT): its supervisor is gone, so is its API.
    if stop_pidfile_process(worker_pidfile, ("celery",), signal.SIGQUIT):
        console.print("stopped a worker left running by a previous `actionq up`")

    server: EmbeddedServer | None = None
    if "ACTIONQ_REDIS_URL" in os.environ:
        redis_url = os.environ["ACTIONQ_REDIS_URL"]
        where = f"Redis at {redis_url.split('@')[-1]} (ACTIONQ_REDIS_URL)"
    else:
        server = EmbeddedServer(
            data_dir / "redis",
            die_with_parent=True,
            appendfsync=load_settings().embedded_appendfsync,
        )
        if server.stop_leftover():
            console.print("stopped a server left running by a previous `actionq up`")
        redis_url = server.start()
        where = f"embedded server on 127.0.0.1:{server.port}, data in {server.data_dir}"

    keys = os.environ.get("ACTIONQ_API_KEYS") or _api_key(data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    env |= {k: v for k, v in os.environ.items() if k.startswith("ACTIONQ_")}
    env |= {"ACTIONQ_REDIS_URL": redis_url, "ACTIONQ_API_KEYS": keys}
    env.setdefault("ACTIONQ_WORKDIR", str(Path.cwd()))
    settings = load_settings(redis_url=redis_url, api_keys=keys)

    worker_log = data_dir / "worker.log"
    with worker_log.open("ab") as log:
        worker = subprocess.Popen(
            worker_command(workers, "up@%h"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # If `actionq up` is killed outright the server goes too, so a
            # shutdown could not record anything: die at once (the pool
            # children follow); the next start's recovery errors its actions.
            preexec_fn=die_with_parent_hook(signal.SIGKILL),
        )
    worker_pidfile.write_text(str(worker.pid))
    try:
        _wait_for_worker(settings, worker, worker_log)
        api_url = f"http://{host}:{port}"
        key = keys.split(",")[0]
        _write_connection_file(data_dir, api_url, key)
        console.print(f"[bold]actionq up[/]  state: {where}")
        console.print(f"  worker:  {workers} pool process(es), log {worker_log}")
        console.print(f"  API:     {api_url}  (OpenAPI at {api_url}/docs)")
        console.print(f"  API key: {key}  (header X-Session-API-Key; saved in {data_dir})")
        console.print("  Ctrl-C stops everything.")
        from app.api import SHUTDOWN_GRACE_SECONDS, create_app

        uvicorn.run(
            create_app(settings), host=host, port=port, log_level="warning",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )  # fmt: skip
    finally:
        console.print("stopping: worker (running actions may finish) ...")
        _stop(worker, timeout=60)
        worker_pidfile.unlink(missing_ok=True)
        if server is not None:
            console.print("stopping: server (flushing its append-only file) ...")
            server.stop()
        console.print("stopped")
