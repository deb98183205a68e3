"""``actionq up``: the whole stack in one command.

With no ``ACTIONQ_REDIS_URL`` it starts an embedded Redis-compatible server
whose data (append-only file) lives in the data folder, then a worker and the
HTTP API. One ``up`` per folder: it holds the folder's lock (``data_folder``) for
its whole life, and a second one refuses to start. Before anything starts
it takes the API port, so a port in use stops it with nothing written.

While it runs it supervises its children: a worker or server that dies is
reported in one line and restarted with back-off (the server on the same port
with the same data; the API and worker reconnect by themselves).

Ctrl-C or SIGTERM stop everything it started, in order: the API, the worker
(warm shutdown: running actions finish; a second Ctrl-C or SIGTERM cuts them
off), then the server (which flushes its append-only file). Children also die
with it if it is killed outright.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import FrameType

import uvicorn
from rich.console import Console

from actionq.agent.profiles import model_key_env_names
from actionq.local.data_folder import (
    DataFolder,
    FolderInUseError,
    ensure_private_dir,
    read_or_create_secret,
    write_pidfile,
    write_secret_file,
)
from actionq.local.embedded import EmbeddedServer
from actionq.local.processes import (
    child_preexec,
    stop_pidfile_process,
    stop_process,
    worker_command,
)
from actionq.local.supervision import SupervisedChild, Supervisor
from actionq.secrets import SecretBox, SecretKeyError, create_key_file, is_secret_setting
from actionq.settings import Settings, load_settings
from actionq.tools.workspace import WorkspaceError, check_workspace_root

__all__ = ["make_console", "run_up"]

# ACTIONQ_* values that carry a password: kept in 0600 files for `actionq env`
# and `actionq flower`, never in the lock file's record.
# An archive URL may hold a PostgreSQL password: kept like the Redis URL.
SECRET_SETTING_FILES = {
    "ACTIONQ_REDIS_URL": "redis.url",
    "ACTIONQ_BROKER_URL": "broker.url",
    "ACTIONQ_ARCHIVE_URL": "archive.url",
}
NOT_FOR_THE_WORKER = ("ACTIONQ_API_KEYS", "ACTIONQ_API_KEY", "ACTIONQ_API_URL")
SECRET_KEY_NAME = "secret-key"


def make_console() -> Console:
    """A console that, writing to a file or a pipe, never wraps or cuts lines
    at 80 columns (a log must keep one line per line)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=100_000, soft_wrap=True)
    return console


def _bind_api_socket(host: str, port: int) -> socket.socket:
    """Take the API port now, before anything starts (uvicorn serves on this
    very socket later, so nobody can take it in between)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise SystemExit(f"actionq up: cannot listen on {host}:{port}: {e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = "the port is already in use" if e.errno == 98 else str(e)
        raise SystemExit(
            f"actionq up: cannot listen on {host}:{port}: {reason}; choose another with --port"
        ) from None
    return sock


def _wait_for_worker(settings: Settings, worker: SupervisedChild, log: Path) -> None:
    from actionq.store import ActionStore

    store = ActionStore.from_settings(settings)
    deadline = time.monotonic() + 60
    while not store.live_worker_ids():
        process = worker.process
        if process is None or process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"actionq up: the worker did not start; see {log}")
        time.sleep(0.1)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (systemd, Docker, kill) stops `up` the way Ctrl-C does.
    raise KeyboardInterrupt


def _workspace_root(data_dir: Path) -> Path:
    """Where the worker's conversations get their folders: <data>/workspace,
    unless ACTIONQ_WORKDIR says otherwise (never the data folder itself)."""
    return Path(os.environ.get("ACTIONQ_WORKDIR") or data_dir / "workspace")


def _absolute_archive_url(url: str) -> str:
    """A JSONL archive named by a relative path, made absolute: the workers
    run in another folder than the API, and both must find the same files."""
    if "://" in url:
        return url
    return str(Path(url).expanduser().absolute())


def _secret_key_files(data_dir: Path) -> dict[str, str]:
    """ACTIONQ_SECRET_KEY_FILE (and ..._OLD if given), absolute (the workers
    run in another folder): the user's, else <data>/secret-key, made on the
    first start and kept. A key file the user named is never made: a typo
    would otherwise seal with a new key."""
    files = {
        name: str(Path(os.environ[name]).expanduser().absolute())
        for name in ("ACTIONQ_SECRET_KEY_FILE", "ACTIONQ_SECRET_KEY_FILE_OLD")
        if os.environ.get(name)
    }
    if "ACTIONQ_SECRET_KEY_FILE" not in files:
        files["ACTIONQ_SECRET_KEY_FILE"] = str(create_key_file(data_dir / SECRET_KEY_NAME))
    return files


def run_up(data_dir: Path, host: str, port: int, workers: int) -> None:
    console = make_console()
    folder = DataFolder(data_dir)
    try:  # before anything is written or started (its worker would refuse every tool)
        check_workspace_root(_workspace_root(folder.path), folder.path)
    except WorkspaceError as e:
        raise SystemExit(f"actionq up: {e}") from None
    api_url = f"http://{host}:{port}"
    try:
        folder.check_not_locked()  # before the port: the clearer message
        api_socket = _bind_api_socket(host, port)
        try:
            folder.lock(api_url)
        except FolderInUseError:
            api_socket.close()
            raise
    except FolderInUseError as e:
        raise SystemExit(f"actionq up: {e}; stop it first or use another --data-dir") from None

    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = _LocalStack(folder, console, workers)
    try:
        stack.start()
        settings = stack.settings
        key_file = folder.path / "api-key" if "ACTIONQ_API_KEYS" not in os.environ else None
        connection = {"url": api_url, "api_key": settings.api_keys[0]}
        write_secret_file(folder.path / "api.json", json.dumps(connection, indent=2))
        folder.publish(api_url, stack.shared_settings())
        console.print(f"[bold]actionq up[/]  state: {stack.where}")
        console.print(f"  worker:  {workers} pool process(es), log {stack.worker_log}")
        console.print(
            f"  agent:   {settings.agent_concurrency} step thread(s), log {stack.agent_worker_log}"
        )
        console.print(f"  tools:   run in {stack.workdir}/<conversation id>")
        key_file_path = stack.actionq_env["ACTIONQ_SECRET_KEY_FILE"]
        console.print(f"  secrets: sealed with the key in {key_file_path}  (back it up)")
        console.print(f"  API:     {api_url}  (OpenAPI at {api_url}/docs)")
        console.print(f"  console: {api_url}/console/  (log in with the API key)")
        where_key = key_file or "ACTIONQ_API_KEYS"
        console.print(f"  API key: in {where_key}  (header X-Session-API-Key)")
        attach = f"actionq env --data-dir {shlex.quote(str(folder.path))}"
        console.print(f'  attach:  eval "$({attach})"', markup=False)
        console.print("  Ctrl-C stops everything.")
        from actionq.api import create_app, server_options

        config = uvicorn.Config(
            create_app(settings), log_level="warning", **server_options(settings)
        )
        # uvicorn stops on SIGINT/SIGTERM, then raises the signal again, which
        # lands in our handlers: KeyboardInterrupt either way.
        uvicorn.Server(config).run(sockets=[api_socket])
    except KeyboardInterrupt:
        pass
    finally:
        api_socket.close()
        stack.stop()
        folder.unlock()
        signal.signal(signal.SIGTERM, previous_sigterm)


class _LocalStack:
    """The server (unless ACTIONQ_REDIS_URL is set) and the worker of one `up`."""

    def __init__(self, folder: DataFolder, console: Console, workers: int) -> None:
        self.folder = folder
        self.console = console
        self.workers = workers
        self.server: EmbeddedServer | None = None
        self.worker = SupervisedChild(
            "worker", self._start_worker, console, kill_group_on_death=True
        )
        self.agent_worker = SupervisedChild(
            "agent worker", self._start_agent_worker, console, kill_group_on_death=True
        )
        self.supervisor = Supervisor(console)
        self.worker_log = folder.path / "worker.log"
        self.worker_pidfile = folder.path / "worker.pid"
        self.agent_worker_log = folder.path / "agent-worker.log"
        self.agent_worker_pidfile = folder.path / "agent-worker.pid"
        self.workdir = _workspace_root(folder.path)
        self.env: dict[str, str] = {}
        self.actionq_env: dict[str, str] = {}
        self.settings = Settings()
        self.where = ""

    def start(self) -> None:
        data_dir = self.folder.path
        # We hold the lock, so the `up` that wrote these pidfiles is gone:
        # what they name (same pid and start time) was left behind. Cold
        # shutdown (SIGQUIT) for the worker: its API went with its `up`.
        for pidfile in (self.worker_pidfile, self.agent_worker_pidfile):
            if stop_pidfile_process(pidfile, signal.SIGQUIT):
                self.console.print("stopped a worker left running by a previous `actionq up`")
        user_settings = load_settings()
        # Before anything starts: an unusable key stops `up` with one line.
        secret_key_files = _secret_key_files(data_dir)
        key_settings = {
            "secret_key_file": secret_key_files["ACTIONQ_SECRET_KEY_FILE"],
            "secret_key_file_old": secret_key_files.get("ACTIONQ_SECRET_KEY_FILE_OLD"),
        }
        try:
            SecretBox.from_settings(user_settings.model_copy(update=key_settings))
        except SecretKeyError as e:
            raise SystemExit(f"actionq up: {e}") from None
        if "ACTIONQ_REDIS_URL" in os.environ:
            redis_url = os.environ["ACTIONQ_REDIS_URL"]
            self.where = f"Redis at {redis_url.split('@')[-1]} (ACTIONQ_REDIS_URL)"
        else:
            self.server = EmbeddedServer(
                data_dir / "redis",
                die_with_parent=True,
                appendfsync=user_settings.embedded_appendfsync,
                maxmemory=user_settings.embedded_maxmemory,
            )
            if self.server.stop_leftover():
                self.console.print("stopped a server left running by a previous `actionq up`")
            redis_url = self.server.start()
            self.where = (
                f"embedded server on 127.0.0.1:{self.server.port}, data in {self.server.data_dir}"
            )
            server_child = SupervisedChild("server", self._restart_server, self.console)
            assert self.server.process is not None
            server_child.adopt(self.server.process)
            self.supervisor.add(server_child)

        keys = os.environ.get("ACTIONQ_API_KEYS") or read_or_create_secret(data_dir / "api-key")
        if self.workdir == data_dir / "workspace":
            ensure_private_dir(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        actionq_env = {k: v for k, v in os.environ.items() if k.startswith("ACTIONQ_")}
        actionq_env |= {
            "ACTIONQ_REDIS_URL": redis_url,
            "ACTIONQ_WORKDIR": str(self.workdir),
            "ACTIONQ_DATA_DIR": str(data_dir),
            # Commands' output spools, in the private data folder (not /tmp).
            "ACTIONQ_OUTPUT_SPOOL_DIR": actionq_env.get("ACTIONQ_OUTPUT_SPOOL_DIR")
            or str(data_dir / "output-spool"),
            **secret_key_files,
        }
        if actionq_env.get("ACTIONQ_ARCHIVE_URL"):
            actionq_env["ACTIONQ_ARCHIVE_URL"] = _absolute_archive_url(
                actionq_env["ACTIONQ_ARCHIVE_URL"]
            )
        for name in NOT_FOR_THE_WORKER:  # tools run in the worker: keep API keys out
            actionq_env.pop(name, None)
        self.actionq_env = actionq_env
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
        self.env |= actionq_env
        for name, file_name in SECRET_SETTING_FILES.items():
            if name in actionq_env:
                write_secret_file(data_dir / file_name, actionq_env[name])
        self.settings = load_settings(redis_url=redis_url, api_keys=keys, **key_settings)
        self.worker.start()
        self.supervisor.add(self.worker)
        self.agent_worker.start()
        self.supervisor.add(self.agent_worker)
        _wait_for_worker(self.settings, self.worker, self.worker_log)
        self.supervisor.start()

    def shared_settings(self) -> dict[str, str]:
        """What another worker or client needs to join, secrets left out."""
        return {k: v for k, v in self.actionq_env.items() if k not in SECRET_SETTING_FILES}

    def _start_worker(self) -> subprocess.Popen[bytes]:
        command = worker_command(self.workers, "up@%h", queue=self.settings.queue)
        # Tools run here, as the worker's user, who can read the worker's own
        # /proc/<pid>/environ: the model keys and the secret key's file are
        # never in it (only the agent worker, which runs no tool, gets them).
        model_keys = model_key_env_names(self.settings)
        env = {
            k: v for k, v in self.env.items() if k not in model_keys and not is_secret_setting(k)
        }
        return self._start_worker_process(command, self.worker_log, self.worker_pidfile, env)

    def _start_agent_worker(self) -> subprocess.Popen[bytes]:
        command = worker_command(
            self.settings.agent_concurrency,
            "up-agent@%h",
            agent=True,
            queue=self.settings.agent_queue,
        )
        return self._start_worker_process(
            command, self.agent_worker_log, self.agent_worker_pidfile, self.env
        )

    def _start_worker_process(
        self, command: list[str], log_path: Path, pidfile: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # If `actionq up` is killed outright the server goes too, so a
                # shutdown could not record anything: die at once (the pool
                # children follow); the next start's recovery errors its actions.
                preexec_fn=child_preexec(die_with_parent=True, sig=signal.SIGKILL),
            )
        write_pidfile(pidfile, process.pid)
        return process

    def _restart_server(self) -> subprocess.Popen[bytes]:
        assert self.server is not None
        self.server.start()  # same port, password and append-only file
        assert self.server.process is not None
        return self.server.process

    def stop(self) -> None:
        self.supervisor.stop()
        if self.server is None and self.worker.process is None:
            return  # refused before anything started (e.g. its secret key): nothing to say
        # The agent worker first: a step it finishes may queue tool calls,
        # which the tool worker then leaves for the next start.
        agent_worker = self.agent_worker.process
        if agent_worker is not None and agent_worker.poll() is None:
            self.console.print("stopping: agent worker (model calls in flight finish) ...")
            self._stop_worker(agent_worker)
        self.agent_worker_pidfile.unlink(missing_ok=True)
        worker = self.worker.process
        if worker is not None and worker.poll() is None:
            self.console.print(
                "stopping: worker (running actions finish; Ctrl-C again cuts them off) ..."
            )
            self._stop_worker(worker)
        self.worker_pidfile.unlink(missing_ok=True)
        if self.server is not None:
            self.console.print("stopping: server (flushing its append-only file) ...")
            self.server.stop()
        self.console.print("stopped")

    def _stop_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """Warm shutdown (SIGTERM), as long as the longest action may take; a
        second Ctrl-C or SIGTERM, or the time running out, makes it cold
        (SIGQUIT: running actions are recorded as cut off, not re-run)."""

        def go_cold(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGQUIT)

        old_int = signal.signal(signal.SIGINT, go_cold)
        old_term = signal.signal(signal.SIGTERM, go_cold)
        try:
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(self.settings.action_time_limit + 30)
            # Still running: cold, then SIGKILL if even that hangs (a no-op
            # when it has exited).
            stop_process(worker, 30, signal.SIGQUIT)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
