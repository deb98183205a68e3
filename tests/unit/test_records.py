"""The identity of "the same call" (actionq.store.records): arguments as
canonical JSON and the fingerprint of tool + arguments, which quarantine and
retries count crashes by; and records read back from Redis hashes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actionq.models import ActionState
from actionq.store.records import action_from_hash, canonical_json, fingerprint


def test_key_order_does_not_matter_at_any_depth() -> None:
    one = {"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": None}}
    other = {"a": {"x": None, "y": [1, {"p": 3, "q": 2}]}, "b": 1}
    assert canonical_json(one) == canonical_json(other)
    assert canonical_json(one) == '{"a":{"x":null,"y":[1,{"p":3,"q":2}]},"b":1}'
    assert fingerprint("terminal", one) == fingerprint("terminal", other)


def test_unicode_is_kept_as_text_and_round_trips() -> None:
    arguments = {"path": "répertoire/日本.txt", "emoji": "😀", "quote": '"\\'}
    text = canonical_json(arguments)
    assert text == '{"emoji":"😀","path":"répertoire/日本.txt","quote":"\\"\\\\"}'
    assert json.loads(text) == arguments
    # Escaped or not, the same characters are the same call.
    assert fingerprint("f", arguments) == fingerprint("f", json.loads(json.dumps(arguments)))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"command": "ls"}, {"command": "ls "}),
        ({"n": 1}, {"n": "1"}),
        ({"n": 1}, {"n": True}),
        ({"n": None}, {}),
        ({"list": [1, 2]}, {"list": [2, 1]}),  # a list's order is its meaning
        ({"a": {"b": 1}}, {"a.b": 1}),
        ({"é": 1}, {"e\u0301": 1}),  # no Unicode normalisation: other bytes, other call
    ],
)
def test_different_arguments_are_different_calls(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    assert canonical_json(one) != canonical_json(other)
    assert fingerprint("t", one) != fingerprint("t", other)


def test_the_tool_is_part_of_the_identity() -> None:
    assert fingerprint("file_read", {"path": "x"}) != fingerprint("file_write", {"path": "x"})


def test_a_fingerprint_is_32_hex_digits_and_can_reuse_the_canonical_text() -> None:
    arguments = {"command": "echo hi", "timeout": 5}
    value = fingerprint("terminal", arguments)
    assert len(value) == 32 and int(value, 16) >= 0
    assert fingerprint("terminal", arguments, canonical_json(arguments)) == value
    assert fingerprint("terminal", {}) != fingerprint("terminal", {}, "{}x")


def test_an_action_hash_reads_back_with_empty_fields_as_none() -> None:
    raw = {
        "id": "a1",
        "conversation_id": "c1",
        "state": "claimed",
        "tool": "terminal",
        "arguments": '{"command":"ls"}',
        "tool_call_id": "call-1",
        "fingerprint": "f" * 32,
        "created_at": "2025-01-01T00:00:00+00:00",
        "attempt": "2",
        "fence": "7",
        "owner": "",  # Redis stores "" where a field was cleared
        "host": "h",
        "pid": "4242",
        "claimed_at": "1700000000.25",
        "finished_at": "",
        "pgid": "",
        "cgroup": "",
    }
    action = action_from_hash(raw)
    assert action.state is ActionState.CLAIMED
    assert action.arguments == {"command": "ls"}
    assert (action.attempt, action.fence, action.pid) == (2, 7, 4242)
    assert action.claimed_at == 1700000000.25
    assert (action.owner, action.finished_at, action.pgid, action.cgroup) == (None,) * 4
    assert (action.retry_of, action.boot_id, action.pgid_start) == (None,) * 3
