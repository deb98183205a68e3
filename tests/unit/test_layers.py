"""The layers of the package and what each may import (docs/design.md,
"Layers"), checked on the source: every import of a module of another layer
goes down the table, and no module imports itself back through others
(imports inside functions count too). Reads the code as text; runs nothing."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers import ROOT

# Lower number, lower layer. A module may import its own layer and any below.
LAYERS: dict[str, int] = {
    "actionq.errors": 0,
    "actionq.models": 1,
    "actionq.settings": 1,
    "actionq.secrets": 1,
    "actionq.store_url": 1,
    "actionq.tools": 2,
    "actionq.agent": 2,
    "actionq.store": 3,
    "actionq.messaging": 4,
    "actionq.archive": 4,
    "actionq.crashes": 5,
    "actionq.service": 6,
    "actionq.runtime": 6,
    "actionq.tasks": 7,
    "actionq.api": 7,
    "actionq.local": 8,
    "actionq.cli": 9,
    "actionq.__main__": 10,
}
# Within one rank only these pairs may import each other's layer.
SAME_RANK_ALLOWED = {
    ("actionq.runtime", "actionq.service"),
    ("actionq.agent", "actionq.tools"),
    ("actionq.secrets", "actionq.settings"),
    ("actionq.settings", "actionq.store_url"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    parts[0] = "actionq.tasks" if parts[0] == "tasks" else "actionq"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    # app/tasks is a symlink to tasks/: read each file once, from tasks/.
    package = [f for f in (ROOT / "app").rglob("*.py") if not f.is_relative_to(ROOT / "app/tasks")]
    files = package + list((ROOT / "tasks").glob("*.py"))
    return {_module_name(f): f for f in files}


def _imports(sources: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in sources.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("actionq"):
                assert node.module is not None
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[module].add(target if target in sources else node.module)
            elif isinstance(node, ast.Import):
                graph[module] |= {a.name for a in node.names if a.name.startswith("actionq")}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else None  # None: the package itself


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = {m for m in _sources() if _layer(m) is not None and _layer(m) not in LAYERS}
    assert unplaced == set(), "add them to LAYERS here and to docs/design.md"


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for module, targets in _imports(_sources()).items():
        source = _layer(module)
        if source is None:
            continue
        for target in targets:
            layer = _layer(target)
            if layer is None or layer == source:
                continue
            rank, target_rank = LAYERS[source], LAYERS[layer]
            if target_rank > rank or (
                target_rank == rank and (source, layer) not in SAME_RANK_ALLOWED
            ):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_circle() -> None:
    sources = _sources()
    graph = _imports(sources)
    circles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in sources:
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sources:
        if module not in index:
            visit(module)
    assert circles == []
