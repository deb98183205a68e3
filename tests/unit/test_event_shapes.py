"""Stored events keep reading after a field is dropped from a model (the store
parses every event it returns with ``event_adapter``; models forbid unknown
fields)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from actionq.models import ActionEvent, event_adapter

# An ActionEvent as 0.1.0 stored it: with "pgid": null, a field nothing set.
STORED_BY_0_1_0 = (
    '{"id":"7c0f","timestamp":"2026-11-28T14:35:03+00:00","source":"agent",'
    '"kind":"ActionEvent","tool_name":"terminal","tool_call_id":"call_7c0f",'
    '"action":{"command":"true"},"thought":"","retry_of":null,"pgid":null}'
)


def test_an_action_event_stored_with_pgid_null_still_reads() -> None:
    event = event_adapter.validate_json(STORED_BY_0_1_0)
    assert isinstance(event, ActionEvent)
    assert event.action == {"command": "true"}
    assert "pgid" not in json.loads(event.model_dump_json())


def test_a_pgid_with_a_value_is_still_refused() -> None:
    with pytest.raises(ValidationError, match="pgid"):
        event_adapter.validate_json(STORED_BY_0_1_0.replace('"pgid":null', '"pgid":42'))
