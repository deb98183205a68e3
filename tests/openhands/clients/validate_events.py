"""Validate events against the OpenHands SDK's own classes (runs under the SDK venv).

stdin: a JSON list of events. stdout, last line: ``{"errors": [...]}``, one
string per event that ``Event.model_validate`` refuses, naming its index and
kind. This is what RemoteConversation does with every event it reads, over
REST (``RemoteEventsList``) and over the WebSocket.
"""

from __future__ import annotations

import json
import sys

# Registers TerminalAction, FileEditorAction and their observations: nested
# `action`/`observation` resolve their `kind` among the registered classes.
import openhands.tools  # noqa: F401
from openhands.sdk.event import Event
from pydantic import ValidationError


def errors_of(events: list[object]) -> list[str]:
    errors: list[str] = []
    for index, item in enumerate(events):
        kind = item.get("kind") if isinstance(item, dict) else type(item).__name__
        try:
            Event.model_validate(item)
        except ValidationError as exc:
            errors.append(f"event {index} ({kind}): {exc}")
    return errors


def main() -> int:
    events = json.load(sys.stdin)
    if not isinstance(events, list):
        print("stdin must be a JSON list of events", file=sys.stderr)
        return 2
    print(json.dumps({"errors": errors_of(events)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
