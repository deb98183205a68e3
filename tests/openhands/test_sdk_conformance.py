"""Event shapes checked by the OpenHands SDK itself (no actionq server).

The events (sample_events.py) are the shapes of shared/research/openhands.md
§2, as the agent-server writes them. `validate_events` is the check the compatibility work
points at actionq's own projection of its events."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tests.openhands.sample_events import (
    AGENT_ERROR,
    DOCUMENTED,
    MESSAGE,
    OBSERVATION,
    STATE_UPDATE,
)

Validate = Callable[[list[dict[str, Any]]], list[str]]


def test_the_documented_shapes_validate(validate_events: Validate) -> None:
    assert validate_events(copy.deepcopy(DOCUMENTED)) == []


def test_an_extra_field_an_unknown_kind_or_a_missing_field_is_refused(
    validate_events: Validate,
) -> None:
    # `seq` is what actionq's own events carry; OpenHands' are extra="forbid".
    with_seq = STATE_UPDATE | {"seq": 7}
    nested_extra = OBSERVATION | {"observation": OBSERVATION["observation"] | {"seq": 7}}
    unknown = AGENT_ERROR | {"kind": "ToolCrashEvent"}
    no_call_id = {k: v for k, v in AGENT_ERROR.items() if k != "tool_call_id"}
    no_kind = {k: v for k, v in AGENT_ERROR.items() if k != "kind"}
    errors = validate_events([MESSAGE, with_seq, nested_extra, unknown, no_call_id, no_kind])
    assert len(errors) == 5, errors
    assert errors[0].startswith("event 1 (ConversationStateUpdateEvent)")
    assert "seq" in errors[0] and "extra_forbidden" in errors[0]
    assert errors[1].startswith("event 2 (ObservationEvent)") and "extra_forbidden" in errors[1]
    assert errors[2].startswith("event 3 (ToolCrashEvent)") and "Unknown kind" in errors[2]
    assert errors[3].startswith("event 4 (AgentErrorEvent)") and "tool_call_id" in errors[3]
    assert errors[4].startswith("event 5 (None)")
