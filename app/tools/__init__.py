"""Tools that actions run. Importing this package registers the built-ins."""

from actionq.tools import builtin as _builtin  # noqa: F401  (registers the built-in tools)
from actionq.tools import file_editor as _file_editor  # noqa: F401  (OpenHands' file_editor)
from actionq.tools import files as _files  # noqa: F401  (and the file tools)
from actionq.tools.registry import (
    RISK_LEVELS,
    Tool,
    ToolContext,
    ToolRisk,
    find_tool,
    get_tool,
    load_tool_modules,
    registered_tools,
    tool,
)
from actionq.tools.workspace import conversation_workspace

__all__ = [
    "RISK_LEVELS",
    "Tool",
    "ToolContext",
    "ToolRisk",
    "conversation_workspace",
    "find_tool",
    "get_tool",
    "load_tool_modules",
    "registered_tools",
    "tool",
]
