"""What the HTTP API shows of an action (actionq.api.schemas.ActionResponse.of):
times in ISO 8601 UTC, and only the fields its schema declares."""

from __future__ import annotations

from datetime import datetime

from actionq.api.schemas import ActionResponse
from actionq.models import ActionRecord, ActionState

INTERNAL = {"fence", "pgid", "pgid_start", "boot_id", "cgroup", "memory_cgroup"}


def record(**fields: object) -> ActionRecord:
    base: dict[str, object] = {
        "id": "a1",
        "conversation_id": "c1",
        "state": ActionState.DONE,
        "tool": "terminal",
        "arguments": {"command": "echo é"},
        "tool_call_id": "call-1",
        "fingerprint": "f" * 32,
        "created_at": "2025-01-02T03:04:05.000006+00:00",
    }
    return ActionRecord.model_validate(base | fields)


def test_epoch_times_become_iso_utc() -> None:
    shown = ActionResponse.of(record(claimed_at=0.0, finished_at=1_700_000_000.25))
    assert shown.claimed_at == "1970-01-01T00:00:00+00:00"
    assert shown.finished_at == "2023-11-14T22:13:20.250000+00:00"
    assert shown.finished_at is not None
    assert datetime.fromisoformat(shown.finished_at).timestamp() == 1_700_000_000.25


def test_times_not_yet_set_stay_null() -> None:
    shown = ActionResponse.of(record(state=ActionState.PENDING))
    assert (shown.claimed_at, shown.finished_at) == (None, None)
    assert shown.model_dump(mode="json")["claimed_at"] is None


def test_internal_fields_are_never_shown() -> None:
    stored = record(
        fence=9, pgid=4321, pgid_start=777, boot_id="b-1", cgroup="/sys/fs/cgroup/x", pid=12
    )
    shown = ActionResponse.of(stored).model_dump(mode="json")
    assert set(shown) == set(ActionResponse.model_fields)
    assert INTERNAL.isdisjoint(shown)
    assert "4321" not in str(shown) and "cgroup" not in str(shown)


def test_the_declared_fields_are_carried_over_as_stored() -> None:
    stored = record(attempt=2, owner="w1@h:1:x", host="h", pid=12, terminal_kind="ObservationEvent")
    shown = ActionResponse.of(stored).model_dump(mode="json")
    expected = stored.model_dump(mode="json", exclude=INTERNAL | {"claimed_at", "finished_at"})
    assert {k: v for k, v in shown.items() if k in expected} == expected
    assert shown["state"] == "done" and shown["arguments"] == {"command": "echo é"}


def test_a_field_added_to_the_store_stays_internal() -> None:
    """The store may grow fields; the API shows one only once its schema declares it."""

    class GrownRecord(ActionRecord):
        worker_secret: str = "s3cret"

    grown = GrownRecord.model_validate(record().model_dump())
    shown = ActionResponse.of(grown).model_dump(mode="json")
    assert "worker_secret" not in shown and "s3cret" not in str(shown)
