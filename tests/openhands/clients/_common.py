"""What every client script shares (runs in the SDK venv, Python >= 3.12).

A script reads its parameters from the environment (tests/openhands/harness.py
sets them), builds the agent and a RemoteConversation against actionq with
`make_agent` and `make_conversation`, and ends with `finish(result,
conversation)`: that validates every event of the conversation again over
REST, fails on any ERROR an ``openhands`` logger logged, and prints the
result as the last stdout line. The WebSocket client only logs an event that
fails validation ("ws_event_processing_error") and goes on, so the log is
where such a failure shows.

    from _common import finish, make_agent, make_conversation, run_script

    def main() -> None:
        conversation = make_conversation(make_agent())
        ...
        finish({"status": "..."}, conversation)

    if __name__ == "__main__":
        run_script(main)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import httpx

# Registers TerminalAction, FileEditorAction and their observations, which
# the events' nested `action` / `observation` must resolve to.
import openhands.tools  # noqa: F401
from openhands.sdk import LLM, Agent, Conversation, Tool, Workspace
from openhands.sdk.conversation import BaseConversation, RemoteConversation
from openhands.sdk.event import Event
from pydantic import SecretStr, ValidationError

API_URL = os.environ.get("OH_CLIENT_API_URL", "")
API_KEY = os.environ.get("OH_CLIENT_API_KEY") or None
MODEL_URL = os.environ.get("OH_CLIENT_MODEL_URL", "")
MODEL_KEY = os.environ.get("OH_CLIENT_MODEL_KEY", "fake-model-key")
MODEL_NAME = os.environ.get("OH_CLIENT_MODEL_NAME", "fake-model")
WORKING_DIR = os.environ.get("OH_CLIENT_WORKING_DIR", "workspace/project")
HTTP_TIMEOUT = 30.0
MAX_PAGES = 1000  # 100 events a page: far more than a test makes


class ErrorLog(logging.Handler):
    """Every ERROR (or worse) logged under the ``openhands`` logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[tuple[str, str]] = []  # (message, what to report)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        text = f"{record.name}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]!r}"
        self.records.append((message, text))


# Installed at import, before any conversation exists: SDK loggers propagate
# (openhands.sdk.logger.get_logger), so one handler here sees them all.
ERRORS = ErrorLog()
logging.getLogger("openhands").addHandler(ERRORS)


def require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        fail(f"the script needs ${name}")
    return value


def make_agent(tools: tuple[str, ...] = ("terminal", "file_editor"), **llm: Any) -> Agent:
    """The agent whose LLM is the fake model (the server calls it, with this key)."""
    settings: dict[str, Any] = {
        "model": f"openai/{MODEL_NAME}",
        "base_url": MODEL_URL or require("OH_CLIENT_MODEL_URL"),
        "api_key": SecretStr(MODEL_KEY),
        "usage_id": "agent",
        "num_retries": 0,
    } | llm
    return Agent(llm=LLM(**settings), tools=[Tool(name=name) for name in tools])


def make_conversation(agent: Agent, **options: Any) -> RemoteConversation:
    """A RemoteConversation on actionq (``X-Session-API-Key`` from the env);
    no visualizer, so stdout stays the script's result."""
    workspace = Workspace(
        host=API_URL or require("OH_CLIENT_API_URL"), api_key=API_KEY, working_dir=WORKING_DIR
    )
    conversation = Conversation(
        agent=agent, workspace=workspace, **({"visualizer": None} | options)
    )
    assert isinstance(conversation, RemoteConversation)
    return conversation


def fetch_all_events(conversation_id: str) -> list[dict[str, Any]]:
    """Every event of the conversation, paged as RemoteEventsList pages."""
    headers = {"X-Session-API-Key": API_KEY} if API_KEY else {}
    url = f"{API_URL.rstrip('/')}/api/conversations/{conversation_id}/events/search"
    items: list[dict[str, Any]] = []
    page_id: str | None = None
    seen: set[str] = set()
    with httpx.Client(headers=headers, timeout=HTTP_TIMEOUT) as client:
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": 100} | ({"page_id": page_id} if page_id else {})
            response = client.get(url, params=params)
            response.raise_for_status()
            page = response.json()
            items.extend(page["items"])
            page_id = page.get("next_page_id")
            if not page_id:
                return items
            if page_id in seen:
                fail(f"events/search: next_page_id {page_id!r} came back (a paging loop)")
            seen.add(page_id)
    fail(f"events/search: more than {MAX_PAGES} pages")


def validation_errors(events: list[dict[str, Any]]) -> list[str]:
    errors: list[str] = []
    for index, item in enumerate(events):
        try:
            Event.model_validate(item)
        except ValidationError as exc:
            errors.append(f"event {index} ({item.get('kind')}, id {item.get('id')}): {exc}")
    return errors


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Not sys.exit: the WebSocket client's thread must not keep the process up.
    os._exit(1)


def finish(
    result: dict[str, Any],
    conversation: BaseConversation | str | None = None,
    expected_errors: tuple[str, ...] = (),
) -> NoReturn:
    """Validate the conversation's events over REST, close it (a conversation
    given by id is only read), then print `result` plus ``events_validated``
    and ``expected_errors_logged`` as the last stdout line and exit 0; or exit
    1 naming every validation error and every ERROR logged whose message does
    not start with one of `expected_errors` (a script that takes the server
    away expects the client to log its failed requests)."""
    problems: list[str] = []
    if conversation is not None:
        cid = conversation if isinstance(conversation, str) else str(conversation.id)
        try:
            events = fetch_all_events(cid)
            problems += validation_errors(events)
            result = result | {"events_validated": len(events)}
        except httpx.HTTPError as exc:
            problems.append(f"reading the events back failed: {exc!r}")
        if not isinstance(conversation, str):
            conversation.close()
    expected = 0
    for message, text in ERRORS.records:
        if expected_errors and message.startswith(expected_errors):
            expected += 1
        else:
            problems.append(f"ERROR logged: {text}")
    result = result | {"expected_errors_logged": expected}
    if problems:
        fail("\n".join(["the client saw problems:", *problems]))
    print(json.dumps(result, default=str), flush=True)
    os._exit(0)


def run_script(main: Callable[[], None]) -> NoReturn:
    """Run `main`: an exception is a failure with its traceback, and so is a
    main that returns without calling `finish`."""
    try:
        main()
    except BaseException:
        fail(f"the script raised:\n{traceback.format_exc()}")
    fail("the script ended without calling finish()")
