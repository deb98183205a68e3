"""OpenHands' own client, ``RemoteConversation`` (openhands-sdk, in the
Python 3.12 venv of ``bench.openhands_peer``), against one agent server:
actionq's ``up`` or OpenHands' agent-server. The same script drives both.

It prints one JSON line. Times are ``time.time()`` (the server's crash file
is written by ``date``, on the same machine).

Env:
  OHB_API_URL, OHB_API_KEY: the server and its X-Session-API-Key;
  OHB_MODEL_URL, OHB_MODEL_KEY: the fake model (the server calls it);
  OHB_MODE: ``batch`` (OHB_CONVERSATIONS conversations at once, each sent
    OHB_MESSAGE and run to its end) or ``crash`` (one conversation whose
    tool call kills the process running it);
  OHB_WORKING_DIR: the conversations' working directory;
  OHB_TIMEOUT: seconds each run may take.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any

import httpx
import openhands.tools  # noqa: F401  (registers the terminal's action and observation)
from openhands.sdk import LLM, Agent, Conversation, Tool, Workspace
from openhands.sdk.conversation import RemoteConversation
from openhands.sdk.conversation.exceptions import ConversationRunError
from openhands.sdk.event import ActionEvent, AgentErrorEvent, Event, ObservationEvent
from pydantic import SecretStr

ENV = os.environ
SOCKET_WAIT_S = 35.0  # RemoteConversation's reconnect backoff is at most 30 s


def _conversation(callback: Any) -> RemoteConversation:
    llm = LLM(
        model="openai/fake-model",
        base_url=ENV["OHB_MODEL_URL"],
        api_key=SecretStr(ENV["OHB_MODEL_KEY"]),
        usage_id="agent",
        num_retries=0,
    )
    agent = Agent(llm=llm, tools=[Tool(name="terminal")])
    workspace = Workspace(
        host=ENV["OHB_API_URL"], api_key=ENV["OHB_API_KEY"], working_dir=ENV["OHB_WORKING_DIR"]
    )
    # Kept on the server after close: the batch's memory is measured after it.
    conversation = Conversation(
        agent=agent,
        workspace=workspace,
        visualizer=None,
        callbacks=[callback],
        delete_on_close=False,
    )
    assert isinstance(conversation, RemoteConversation)
    return conversation


def _one(message: str, start: threading.Barrier, out: dict[str, Any]) -> None:
    """Create a conversation, wait for the others, then send and run it.
    Records when each ActionEvent and ObservationEvent reached the client."""
    arrivals: list[tuple[str, float]] = []

    def seen(event: Event) -> None:
        if isinstance(event, (ActionEvent, ObservationEvent)):
            arrivals.append((type(event).__name__, time.time()))

    try:
        created = time.time()
        conversation = _conversation(seen)
        out["create_s"] = time.time() - created
        start.wait(120)
        out["start"] = time.time()
        conversation.send_message(message)
        conversation.run(timeout=float(ENV["OHB_TIMEOUT"]))
        out["end"] = time.time()
        out["status"] = conversation.state.execution_status.value
        out["observations"] = [t for kind, t in arrivals if kind == "ObservationEvent"]
        out["actions"] = [t for kind, t in arrivals if kind == "ActionEvent"]
        conversation.close()
    except BaseException:
        out["error"] = traceback.format_exc()[-3000:]
        start.abort()


def batch() -> dict[str, Any]:
    n = int(ENV["OHB_CONVERSATIONS"])
    start = threading.Barrier(n)
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    threads = [
        threading.Thread(target=_one, args=(f"{ENV['OHB_MESSAGE']} #{i}", start, results[i]))
        for i in range(n)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(float(ENV["OHB_TIMEOUT"]) + 180)
    return {"conversations": results}


def crash() -> dict[str, Any]:
    """run() of a conversation whose first tool call kills the process
    running it: when run() came back and how, and when the AgentErrorEvent
    for that call reached the client (socket), if it did."""
    errors: list[tuple[str | None, float]] = []

    def seen(event: Event) -> None:
        if isinstance(event, AgentErrorEvent):
            errors.append((event.tool_call_id, time.time()))

    conversation = _conversation(seen)
    conversation.send_message(ENV["OHB_MESSAGE"])
    started = time.time()
    run_error = None
    try:
        conversation.run(timeout=float(ENV["OHB_TIMEOUT"]))
    except ConversationRunError as exc:
        run_error = str(exc)[:500]
    returned = time.time()
    # The server's own word, besides the client's state (its cache).
    info = httpx.get(
        f"{ENV['OHB_API_URL']}/api/conversations/{conversation.id}",
        headers={"X-Session-API-Key": ENV["OHB_API_KEY"]},
        timeout=30,
    ).json()
    events = list(conversation.state.events)
    calls = [e.tool_call_id for e in events if isinstance(e, ActionEvent)]
    listed = [e for e in events if isinstance(e, AgentErrorEvent)]
    observed = [e for e in events if isinstance(e, ObservationEvent)]
    # The socket may still be reconnecting (its backoff reaches 30 s): wait
    # for the error the server has, bounded.
    deadline = time.time() + SOCKET_WAIT_S
    while listed and not errors and time.time() < deadline:
        time.sleep(0.05)
    result = {
        "started": started,
        "run_returned": returned,
        "run_error": run_error,
        "status": conversation.state.execution_status.value,
        "server_status": info.get("execution_status"),
        "call_ids": calls,
        "socket_errors": [{"tool_call_id": c, "at": t} for c, t in errors],
        "listed_errors": [{"tool_call_id": e.tool_call_id, "error": e.error[:300]} for e in listed],
        "observations": [
            {"tool_call_id": e.tool_call_id, "observation": e.observation.model_dump_json()[:400]}
            for e in observed
        ],
    }
    conversation.close()
    return result


def main() -> None:
    try:
        result = batch() if ENV["OHB_MODE"] == "batch" else crash()
    except BaseException:
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        os._exit(1)
    print(json.dumps(result), flush=True)
    # Not sys.exit: a WebSocket thread must not keep the process up.
    os._exit(0)


if __name__ == "__main__":
    main()
