"""The risk a tool declares (``@tool(..., risk=...)``, OpenHands' SecurityRisk
names): what a confirmation policy reads with ``get_tool(name).risk``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from actionq.errors import ConfigurationError
from actionq.tools import RISK_LEVELS, ToolContext, get_tool, registered_tools, tool
from actionq.tools.registry import _REGISTRY


class NoArgs(BaseModel):
    pass


@pytest.fixture
def scratch_names() -> Iterator[list[str]]:
    """Names registered by the test, unregistered after it."""
    names: list[str] = []
    yield names
    for name in names:
        _REGISTRY.pop(name, None)


BUILT_INS = {
    "terminal": "HIGH",
    "file_write": "MEDIUM",
    "file_edit": "MEDIUM",
    "file_read": "LOW",
    "file_editor": "MEDIUM",
    "think": "LOW",
    "finish": "LOW",
}


def test_the_built_ins_declare_their_risk() -> None:
    assert {name: get_tool(name).risk for name in BUILT_INS} == BUILT_INS


def test_the_levels_are_openhands_security_risk_names() -> None:
    assert RISK_LEVELS == ("LOW", "MEDIUM", "HIGH", "UNKNOWN")


def test_a_tool_that_does_not_say_is_unknown_and_one_that_does_keeps_it(
    scratch_names: list[str],
) -> None:
    def run(args: NoArgs, ctx: ToolContext) -> dict[str, Any]:
        return {}

    scratch_names += ["risk_test_default", "risk_test_high"]
    tool("risk_test_default", NoArgs)(run)
    tool("risk_test_high", NoArgs, risk="HIGH")(run)
    assert get_tool("risk_test_default").risk == "UNKNOWN"
    assert get_tool("risk_test_high").risk == "HIGH"
    # The model is not told: the risk is for the policy, not part of the spec.
    spec = get_tool("risk_test_high").spec()
    assert set(spec) == {"type", "function"}
    assert set(spec["function"]) == {"name", "description", "parameters"}


def test_a_misspelt_risk_is_refused_at_registration(scratch_names: list[str]) -> None:
    scratch_names.append("risk_test_bad")
    with pytest.raises(ConfigurationError, match="risk 'high' is not one of LOW, MEDIUM, HIGH"):
        tool("risk_test_bad", NoArgs, risk="high")  # type: ignore[arg-type]
    assert "risk_test_bad" not in {t.name for t in registered_tools()}
