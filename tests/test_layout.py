"""The package's layout: stages import downwards only, with no import circles, and the CLI sits on top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

#: lower layers first; a module may import its own layer and the layers below, never above.
LAYERS = [
    {"core"},
    {"config", "readers", "output", "simulator"},
    {"plan", "ratecontrol", "call", "quality"},
    {"engines", "report", "audit"},
    {"api"},
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports of other `pipeline` modules, at any depth (lazy imports inside functions too)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        targets = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):  # type-only imports count too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("pipeline"))
    modules = set(graph) - {"pipeline"}  # the package root: __version__ and lazily loaded public names
    return {name: {t for t in targets if t in modules and t != name} for name, targets in graph.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def _layer(module: str) -> int:
    stage = _stage(module)
    return next(i for i, layer in enumerate(LAYERS) if stage in layer)


def test_every_stage_has_a_layer() -> None:
    stages = {_stage(m) for m in _imports()}
    assert stages <= set().union(*LAYERS), stages - set().union(*LAYERS)


def test_no_stage_imports_a_stage_above_it() -> None:
    upward = [(m, t) for m, targets in _imports().items() for t in targets
              if _layer(t) > _layer(m) and not t.startswith(m + ".") and t != "pipeline"]
    assert upward == []


def test_there_are_no_import_circles() -> None:
    graph = _imports()
    # a package's __init__ importing its own submodules is how packages expose names, not a circle
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []
