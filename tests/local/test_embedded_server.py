"""actionq.local.embedded: the private server `actionq up` and the demo start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from actionq.errors import StoreUnavailableError
from actionq.local.embedded import EmbeddedServer


def _listening() -> socket.socket:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def test_a_chosen_port_taken_before_the_server_binds_it_is_chosen_again(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "data")
    with _listening() as taken:
        # As if another process bound the port after free_port() chose it.
        server.port = taken.getsockname()[1]
        url = server.start()
        try:
            assert server.port != taken.getsockname()[1]
            assert f":{server.port}/" in url
            client = redis.Redis.from_url(url)
            assert client.info("server")["process_id"] == server.process.pid  # type: ignore[union-attr]
            client.close()
        finally:
            server.stop()
    assert "Address already in use" in (tmp_path / "data" / "server.log").read_text()


def test_a_port_the_caller_named_is_never_changed(tmp_path: Path) -> None:
    with _listening() as taken:
        port = taken.getsockname()[1]
        server = EmbeddedServer(tmp_path / "data", port=port)
        with pytest.raises(StoreUnavailableError, match="embedded server exited"):
            server.start()
        assert server.port == port
