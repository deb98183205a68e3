"""pydantic errors as an agent reads them in an AgentErrorEvent
(actionq.models.validation_error_text): every problem, no documentation URLs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from actionq.models import validation_error_text


class Args(BaseModel):
    count: int
    path: str
    depth: int = 0


def error_for(**arguments: object) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        Args.model_validate(arguments)
    return raised.value


def test_every_problem_is_kept_and_no_url_is() -> None:
    error = error_for(count="many", path=3)
    assert "For further information" in str(error)  # what pydantic writes
    text = validation_error_text(error)
    assert "http" not in text and "For further information" not in text
    assert text.splitlines() == [
        line for line in str(error).splitlines() if "errors.pydantic.dev" not in line
    ]
    assert text.splitlines()[0] == "2 validation errors for Args"
    assert "count\n  Input should be a valid integer" in text
    assert "path\n  Input should be a valid string" in text
    assert "input_value='many'" in text  # the agent sees what it sent


def test_a_missing_field_is_named() -> None:
    text = validation_error_text(error_for(count=1))
    assert text == "1 validation error for Args\npath\n  Field required [type=missing, " + (
        "input_value={'count': 1}, input_type=dict]"
    )


def test_a_value_that_mentions_the_phrase_is_kept() -> None:
    # Only pydantic's own URL lines go: a line is dropped when it *starts* with it.
    text = validation_error_text(error_for(count=1, path=1, depth="For further information"))
    assert "input_value='For further information'" in text
