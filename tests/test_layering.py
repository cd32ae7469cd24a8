"""The layering is a fact of the tree: imports point one way, and no two packages import each other.

    schemas  ←  pipeline (errors, config, defaults)  ←  pipeline.store  ←  stages  ←  pipeline.cli

Every package (a folder with `__init__.py`) is a node; an import from a module of one package
of ours to a module of another is an edge. The graph must have no cycle at all, and every edge
must point down the layers above. `__main__` modules are entry points that nothing imports, so
they are not part of the graph; nothing else is left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

_LAYERS = (
    ("schemas", 0),
    ("pipeline.store", 2),
    ("pipeline.cli", 4),
    ("stages", 3),
    ("pipeline", 1),
)
"""(package prefix, rank): the first prefix that matches a package decides its layer."""


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("schemas", "pipeline", "stages"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def _imports(path: Path) -> Iterator[str]:
    """Every module of ours that `path` imports, at any depth (function-level imports too)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name in MODULES)


def _edges() -> dict[str, dict[str, str]]:
    """package → imported package → one module import that makes the edge (for the message)."""
    edges: dict[str, dict[str, str]] = {}
    for module, path in MODULES.items():
        if path.name == "__main__.py":
            continue
        source = _package(module)
        for target in _imports(path):
            if _package(target) != source:
                edges.setdefault(source, {}).setdefault(_package(target), f"{module} → {target}")
    return edges


def _rank(package: str) -> int:
    return next(
        rank for prefix, rank in _LAYERS if package == prefix or package.startswith(prefix + ".")
    )


def test_the_packages_exist() -> None:
    assert {"schemas", "pipeline.store", "pipeline.cli", "stages.execute", "stages.mock"} <= set(
        map(_package, MODULES)
    )


def test_no_two_packages_import_each_other_even_through_others() -> None:
    edges = _edges()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                steps = [edges[a][b] for a, b in zip(cycle, cycle[1:], strict=False)]
                raise AssertionError("import cycle: " + " | ".join(steps))
            if not state.get(nxt):
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)


def test_every_import_points_down_the_layers() -> None:
    upward = [
        why
        for source, targets in _edges().items()
        for target, why in targets.items()
        if _rank(target) > _rank(source)
    ]
    assert not upward, upward


def test_click_is_only_the_cli() -> None:
    users = []
    for module, path in MODULES.items():
        if _package(module).startswith("pipeline.cli"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name == "click" or name.startswith("click.") for name in names):
                users.append(module)
    assert not users, users
