"""The tool registry. A tool is a name, a pydantic argument model (its JSON
schema is the LLM tool spec) and a function that returns an observation dict.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel

from actionq.errors import ConfigurationError, UnknownToolError
from actionq.tools.sandbox import ProcessGroup

__all__ = [
    "RISK_LEVELS",
    "Tool",
    "ToolContext",
    "ToolRisk",
    "find_tool",
    "get_tool",
    "load_tool_modules",
    "registered_tools",
    "tool",
]

ArgsT = TypeVar("ArgsT", bound=BaseModel)

# What running a tool may do, in OpenHands' SecurityRisk names: a confirmation
# policy (ConfirmRisky) asks a person before the risky ones. UNKNOWN: the tool
# did not say (treated as risky by a careful policy).
ToolRisk = Literal["LOW", "MEDIUM", "HIGH", "UNKNOWN"]
RISK_LEVELS: tuple[ToolRisk, ...] = get_args(ToolRisk)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the action it runs for."""

    conversation_id: str
    action_id: str
    # The conversation's own workspace folder (``actionq.tools.workspace``),
    # resolved and existing: `terminal` runs in it, the file tools are
    # confined to it.
    workdir: Path
    max_output_bytes: int
    memory_limit_mb: int  # 0 = no cap
    # Called with the process group (and cgroup) of a command the tool started,
    # so the worker can kill what is left of it if the action crashes or is
    # cancelled.
    register_process_group: Callable[[ProcessGroup], None] = lambda group: None
    # The environment for commands the tool starts (``actionq.tools.sandbox``):
    # never the worker's own, which holds the Redis URL and its password.
    env: Mapping[str, str] = field(default_factory=dict)
    # The file tools refuse paths inside these (actionq's data folder), except
    # inside a workspace that lies within one of them.
    protected_paths: tuple[Path, ...] = ()
    use_cgroups: bool = True  # a cgroup v2 per command where the machine allows
    file_timeout: float = 30.0  # seconds a file tool may take
    # Where `terminal` spools its command's output (``actionq.tools.spool``);
    # None: the default folder.
    output_spool_dir: Path | None = None
    output_tail_bytes: int = 2048  # the tail a crash reports; 0: none
    # Best-effort copy of that tail where a sweeper on another host finds it
    # (the action's output-tail key in Redis), and its removal.
    publish_output_tail: Callable[[bytes], None] = lambda tail: None
    forget_output_tail: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    run: Callable[[Any, ToolContext], dict[str, Any]]
    env: tuple[str, ...] = ()  # variables its commands need, passed even if secret-looking
    risk: ToolRisk = "UNKNOWN"  # declared by the tool; not part of the LLM spec
    # Observation keys for clients only (file_editor's whole file before and
    # after, for a diff view): stored, but left out of what the model reads.
    model_omits: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """The tool as an LLM function spec (OpenAI style)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.args_model.model_json_schema(),
            },
        }


_REGISTRY: dict[str, Tool] = {}


def tool(
    name: str,
    args_model: type[ArgsT],
    description: str | None = None,
    *,
    env: Iterable[str] = (),
    risk: ToolRisk = "UNKNOWN",
    model_omits: Iterable[str] = (),
) -> Callable[[Callable[[ArgsT, ToolContext], dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register a function as the tool ``name``.

    The function gets the validated arguments and a ``ToolContext`` and returns
    a JSON-compatible observation dict. ``env`` names the environment
    variables its commands need beyond the allow-list (``ctx.env``).
    ``risk`` is what running it may do (``ToolRisk``): LOW (reads only),
    MEDIUM (changes files in the workspace), HIGH (runs arbitrary commands),
    UNKNOWN (the default: not declared). ``model_omits`` names observation
    keys the model is not shown (``actionq.agent.view``): what only a client
    needs, such as the content a diff is drawn from.
    """
    if risk not in RISK_LEVELS:  # a tool module's typo: refused when it is imported
        raise ConfigurationError(
            f"tool {name!r}: risk {risk!r} is not one of {', '.join(RISK_LEVELS)}"
        )

    def register(
        fn: Callable[[ArgsT, ToolContext], dict[str, Any]],
    ) -> Callable[..., dict[str, Any]]:
        doc = description or inspect.cleandoc(fn.__doc__ or "")
        _REGISTRY[name] = Tool(name, doc, args_model, fn, tuple(env), risk, tuple(model_omits))
        return fn

    return register


def get_tool(name: str) -> Tool:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownToolError(f"unknown tool {name!r}; registered tools: {known}") from None


def find_tool(name: str) -> Tool | None:
    """The tool ``name``, or None if no module registered it here."""
    return _REGISTRY.get(name)


def registered_tools() -> list[Tool]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def load_tool_modules(modules: Iterable[str]) -> None:
    """Import modules that register extra tools (``ACTIONQ_TOOL_MODULES``).

    The current folder comes first on ``sys.path`` for them, as it does for
    Celery's worker, so a ``mytools.py`` beside the user is found by every
    process (console scripts such as ``actionq`` do not have it on the path).
    """
    modules = list(modules)
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigurationError(f"cannot import tool module {module!r}: {e}") from e
