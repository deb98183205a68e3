"""The harness itself: finding the interpreter, and the client side's
`finish` failing when it should (clients/_common.py), against a small events
server in this process (no actionq needed)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.openhands.harness import (
    PYTHON_VARIABLE,
    RunClient,
    SdkSetupError,
    find_base_python,
    sdk_venv_ready,
    venv_dir,
)
from tests.openhands.sample_events import DOCUMENTED, STATE_UPDATE

KEY = "session-key-1"
PAGE = 2  # small pages, so five events take three


class EventsServer:
    """Serves ``GET /api/conversations/<id>/events/search`` as the
    agent-server pages it (``page_id`` inclusive, ``next_page_id`` the first
    event not returned), requiring ``X-Session-API-Key``."""

    def __init__(self) -> None:
        self.conversations: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if self.headers.get("X-Session-API-Key") != KEY:
                    return self._send(401, {"detail": "bad key"})
                if parts[:2] != ["api", "conversations"] or parts[3:] != ["events", "search"]:
                    return self._send(404, {"detail": "not found"})
                events = server.conversations.get(parts[2])
                if events is None:
                    return self._send(404, {"detail": "no such conversation"})
                page_id = parse_qs(url.query).get("page_id", [None])[0]
                ids = [event["id"] for event in events]
                start = ids.index(page_id) if page_id else 0
                page = events[start : start + PAGE]
                more = start + PAGE < len(events)
                next_page_id = events[start + PAGE]["id"] if more else None
                self._send(200, {"items": page, "next_page_id": next_page_id})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)


@pytest.fixture
def events_server() -> Iterator[EventsServer]:
    server = EventsServer()
    server.thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def _env(server: EventsServer, **extra: str) -> dict[str, str]:
    return {
        "OH_CLIENT_API_URL": server.url,
        "OH_CLIENT_API_KEY": KEY,
        "OH_CLIENT_MODEL_URL": "http://127.0.0.1:9/v1",
    } | extra


def test_finish_pages_through_every_event_and_reports_the_result(
    run_client: RunClient, events_server: EventsServer
) -> None:
    events_server.conversations["c1"] = DOCUMENTED
    done = run_client(
        "selftest", _env(events_server, OH_CLIENT_SELFTEST_CONVERSATION="c1"), timeout=120
    )
    assert done.result == {
        "model": "openai/fake-model",
        "base_url": "http://127.0.0.1:9/v1",
        "tools": ["terminal", "file_editor"],
        "events_validated": len(DOCUMENTED),
        "expected_errors_logged": 0,
    }
    assert len(events_server.requests) == 3  # pages of 2, 2 and 1


def test_finish_fails_on_an_invalid_event_on_a_later_page(
    run_client: RunClient, events_server: EventsServer
) -> None:
    events_server.conversations["c2"] = [*DOCUMENTED, STATE_UPDATE | {"id": "e6", "seq": 6}]
    env = _env(events_server, OH_CLIENT_SELFTEST_CONVERSATION="c2")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_client("selftest", env, timeout=120)
    message = str(failed.value)
    assert "client script selftest failed (exit 1)" in message
    assert "event 5 (ConversationStateUpdateEvent, id e6)" in message
    assert "seq" in message and "extra_forbidden" in message


def test_finish_fails_on_an_error_logged_by_the_sdk(
    run_client: RunClient, events_server: EventsServer
) -> None:
    env = _env(events_server, OH_CLIENT_SELFTEST_LOG_ERROR="ws_event_processing_error")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_client("selftest", env, timeout=120)
    assert (
        "ERROR logged: openhands.sdk.conversation.impl.remote_conversation: "
        "ws_event_processing_error"
    ) in str(failed.value)


def test_a_wrong_key_fails_the_script(run_client: RunClient, events_server: EventsServer) -> None:
    events_server.conversations["c3"] = DOCUMENTED
    env = _env(events_server, OH_CLIENT_SELFTEST_CONVERSATION="c3", OH_CLIENT_API_KEY="wrong")
    with pytest.raises(pytest.fail.Exception, match=r"reading the events back failed.*401"):
        run_client("selftest", env, timeout=120)


def test_the_venv_is_cached_and_marked(sdk_python: Path, pytestconfig: pytest.Config) -> None:
    base = find_base_python()
    assert not isinstance(base, str)
    assert pytestconfig.cache is not None
    root = Path(pytestconfig.cache.mkdir("openhands-sdk-venv"))
    assert sdk_python == venv_dir(root, base) / "bin" / "python"
    assert sdk_venv_ready(root, base)


def test_the_interpreter_search(tmp_path: Path) -> None:
    # Nothing on PATH and no pyenv under HOME: the reason says what to do.
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": str(empty), "HOME": str(empty)}
    reason = find_base_python(env)
    assert isinstance(reason, str) and f"set ${PYTHON_VARIABLE}" in reason
    # An explicit interpreter that is too old is an error, not a fallback.
    with pytest.raises(SdkSetupError, match=rf"is {sys.version_info[0]}\.{sys.version_info[1]}\."):
        find_base_python({PYTHON_VARIABLE: sys.executable} | env)
    with pytest.raises(SdkSetupError, match="does not run"):
        find_base_python({PYTHON_VARIABLE: str(empty / "python9")} | env)


def test_an_error_the_script_expects_is_counted_and_any_other_still_fails(
    run_client: RunClient, events_server: EventsServer
) -> None:
    """A script that takes the server away expects the SDK's "Request
    failed:" errors; they are counted, not failures. Another message fails."""
    expected = _env(
        events_server,
        OH_CLIENT_SELFTEST_LOG_ERROR="Request failed: [Errno 111] Connection refused",
        OH_CLIENT_SELFTEST_EXPECTED_ERROR="Request failed:",
    )
    assert run_client("selftest", expected, timeout=120).result["expected_errors_logged"] == 1
    other = expected | {"OH_CLIENT_SELFTEST_LOG_ERROR": "ws_event_processing_error"}
    with pytest.raises(pytest.fail.Exception) as failed:
        run_client("selftest", other, timeout=120)
    assert "ERROR logged:" in str(failed.value) and "ws_event_processing_error" in str(failed.value)
