"""Tools that actions run. Importing this package registers the built-ins."""

from actionq.tools import builtin as _builtin  # noqa: F401  (registers the built-in tools)
from actionq.tools.registry import (
    RISK_LEVELS,
    Tool,
    ToolContext,
    ToolRisk,
    get_tool,
    load_tool_modules,
    registered_tools,
    tool,
)

__all__ = [
    "RISK_LEVELS",
    "Tool",
    "ToolContext",
    "ToolRisk",
    "get_tool",
    "load_tool_modules",
    "registered_tools",
    "tool",
]
