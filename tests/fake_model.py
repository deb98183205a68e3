"""A fake OpenAI-compatible model server for tests and benchmarks: real HTTP on
127.0.0.1, scripted replies, every request recorded.

    with FakeModel() as fake:
        fake.script("list the files", [
            {"tool_calls": [{"name": "terminal", "arguments": {"command": "ls"}}]},
            {"content": "There are two files."},
        ])
        ...  # point the model at fake.base_url (http://127.0.0.1:PORT/v1)
        assert fake.requests("list the files")[0]["messages"][0]["role"] == "system"

A request belongs to the script whose key is a substring of the content of its
FIRST user message (the longest such key, if several match). Its reply is
``replies[n]``, where n is the number of assistant messages in the request: a
step that runs again after a crash sends the same messages and gets the same
reply (tool call ids included: given, or ``call_<n>_<i>``). A request past the
end of its script, or that matches no script, gets the text "done".

A reply is a dict:

- ``"content"``: the text of the answer;
- ``"tool_calls"``: ``[{"name": str, "arguments": dict | str, "id": str?}]``
  (a str is sent as the raw arguments, e.g. to send malformed JSON;
  ``"id": None`` sends the call without an id);
- ``"delay"``: seconds to sleep before answering (each request at that position);
- ``"fail"``: HTTP statuses (``[429, 500]``) or ``{"status": int, "message": str}``
  dicts: the first ``len(fail)`` requests at that position get these errors,
  with an OpenAI-style error body; later ones get the reply.

``FakeModel(api_key="k")`` answers 401 to a request without
``Authorization: Bearer k``.

Run it as a process (benchmarks): ``python -m tests.fake_model --port N
--script FILE`` where FILE is JSON ``{"key": [reply, ...], ...}``; it prints
its base URL on a line and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["DONE_REPLY", "FakeModel"]

Reply = dict[str, Any]
DONE_REPLY: Reply = {"content": "done"}

# The OpenAI error ``type`` and ``code`` of each status the script may ask for.
_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}


def _text(content: Any) -> str:
    """A message's content as text (a string, or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _first_user_text(body: dict[str, Any]) -> str:
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _assistant_count(body: dict[str, Any]) -> int:
    return sum(
        1
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") == "assistant"
    )


def _completion(key: str | None, position: int, reply: Reply, model: str) -> dict[str, Any]:
    """A chat.completion body for ``reply``. Ids depend only on the script key
    and the position, so a repeated request gets the very same answer."""
    tag = hashlib.sha256((key or "").encode()).hexdigest()[:10]
    tool_calls = []
    for i, call in enumerate(reply.get("tool_calls") or []):
        arguments = call.get("arguments", {})
        tool_call: dict[str, Any] = {
            "id": call.get("id") or f"call_{position}_{i}",
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        if "id" in call and call["id"] is None:
            del tool_call["id"]  # a model that sends no id
        tool_calls.append(tool_call)
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-fake-{tag}-{position}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "error", None))
    return {
        "error": {
            "message": message or f"fake model: HTTP {status}",
            "type": kind,
            "param": None,
            "code": code,
        }
    }


class FakeModel:
    """See the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._requests: list[tuple[str | None, dict[str, Any]]] = []
        # Requests seen at each (key, position): decides which ones get "fail".
        self._seen: dict[tuple[str | None, int], int] = {}
        # Connections being answered: stop() closes them (a delayed answer
        # must not hold its client until the delay is over).
        self._connections: set[socket.socket] = set()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeModel:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting and inspection --

    def script(self, key: str, replies: list[Reply]) -> None:
        """Script the conversation whose first user message contains ``key``."""
        if not key:
            raise ValueError("a script key must not be empty")
        with self._lock:
            self._scripts[key] = [dict(r) for r in replies]

    def requests(self, key: str) -> list[dict[str, Any]]:
        """The request bodies received for ``key``'s script, in order."""
        with self._lock:
            return [body for k, body in self._requests if k == key]

    def all_requests(self) -> list[dict[str, Any]]:
        """Every request body received (scripted or not), in order."""
        with self._lock:
            return [body for _, body in self._requests]

    # -- answering (called by the handler threads) --

    def _match(self, body: dict[str, Any]) -> str | None:
        text = _first_user_text(body)
        matching = [key for key in self._scripts if key in text]
        return max(matching, key=len) if matching else None

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """(status, JSON body, delay) for one request, recorded under its key."""
        with self._lock:
            key = self._match(body)
            self._requests.append((key, body))
            position = _assistant_count(body)
            script = self._scripts.get(key, []) if key is not None else []
            reply = script[position] if position < len(script) else DONE_REPLY
            seen = self._seen.get((key, position), 0)
            self._seen[(key, position)] = seen + 1
        delay = float(reply.get("delay", 0))
        fail = reply.get("fail") or []
        if seen < len(fail):
            failure = fail[seen]
            if isinstance(failure, dict):
                status = int(failure["status"])
                return status, _error_body(status, failure.get("message")), delay
            return int(failure), _error_body(int(failure)), delay
        return 200, _completion(key, position, reply, str(body.get("model", "fake"))), delay


class _Server(ThreadingHTTPServer):
    fake: FakeModel
    daemon_threads = True
    # server_close() would wait for every handler thread, a delayed one too.
    block_on_close = False
    # socketserver listens with a backlog of 5: of 200 clients connecting at
    # once (an agent worker's threads), most were reset or waited for a SYN
    # retry (1 s, 2 s). The kernel caps this at net.core.somaxconn.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client gone mid-answer (a timeout, the server stopping) is normal here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # One request per connection ("Connection: close"): a client's pool
    # keeps no socket to a fake that is gone (each would be an unclosed-
    # socket ResourceWarning at exit); on loopback a connection costs
    # far less than litellm's own work per call.
    protocol_version = "HTTP/1.1"

    @property
    def _fake(self) -> FakeModel:
        server = self.server
        assert isinstance(server, _Server)
        return server.fake

    def setup(self) -> None:
        super().setup()
        with self._fake._lock:
            self._fake._connections.add(self.connection)

    def finish(self) -> None:
        with self._fake._lock:
            self._fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on the test's stderr

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        else:
            self._send(404, _error_body(404, f"no route {self.path}"))

    def _refusal(self, raw: bytes) -> tuple[int, str] | tuple[None, dict[str, Any]]:
        """(status, why) for a request the fake refuses, else (None, body)."""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return 404, f"no route {self.path}"
        if self._fake.api_key is not None and (
            self.headers.get("Authorization") != f"Bearer {self._fake.api_key}"
        ):
            return 401, "Incorrect API key provided."
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, "the body is not JSON"
        if not isinstance(body, dict):
            return 400, "the body is not a JSON object"
        if body.get("stream"):
            return 400, "the fake model does not stream"
        return None, body

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        refused, body = self._refusal(raw)
        if refused is not None:
            self._send(refused, _error_body(refused, str(body)))
            return
        assert isinstance(body, dict)
        status, answer, delay = self._fake._answer(body)
        if delay > 0:
            time.sleep(delay)
        self._send(status, answer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_model", description="A fake OpenAI-compatible model."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--script", help='JSON file: {"key": [reply, ...], ...}')
    parser.add_argument("--api-key", help="answer 401 unless this bearer key is sent")
    args = parser.parse_args(argv)
    fake = FakeModel(args.host, args.port, api_key=args.api_key)
    if args.script:
        with open(args.script) as f:
            scripts = json.load(f)
        for key, replies in scripts.items():
            fake.script(key, replies)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    with fake:
        print(f"http://{args.host}:{fake.port}/v1", flush=True)
        stopped.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
