"""What the API refuses, and how it says so: over real HTTP against a real
`actionq up` subprocess (and the Python API against a real valkey)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.errors import ConflictError, IdempotencyConflict
from app.service import ActionQ
from tests.api_stack import UpProcess, start_up, stop_up


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    base = tmp_path_factory.mktemp("up")
    up = start_up(base / ".actionq", base / "up.log")
    yield up
    stop_up(up)


def test_python_api_refuses_an_idempotency_key_reused_for_another_call(aq: ActionQ) -> None:
    cid = aq.create_conversation().id
    first = aq.submit_action(cid, "terminal", {"command": "date"}, idempotency_key="k")
    same = aq.submit_action(cid, "terminal", {"command": "date"}, idempotency_key="k")
    assert same.id == first.id
    with pytest.raises(IdempotencyConflict, match=first.id) as refused:
        aq.submit_action(cid, "terminal", {"command": "ls"}, idempotency_key="k")
    assert isinstance(refused.value, ConflictError)
    with pytest.raises(IdempotencyConflict):
        aq.submit_action(cid, "read_file", {"command": "date"}, idempotency_key="k")
    assert [e.kind for e in aq.list_events(cid).items].count("ActionEvent") == 1
