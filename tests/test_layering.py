"""Imports point one way: schemas ← pipeline (store) ← stages ← pipeline.cli / pipeline.commands."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

CLI_MODULES = ("pipeline.cli", "pipeline.commands", "pipeline.__main__", "pipeline.entry")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ours(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_packages_exist() -> None:
    assert ours("schemas") and ours("pipeline") and ours("stages")


@pytest.mark.parametrize("path", ours("schemas"), ids=lambda p: module_name(p))
def test_schemas_import_nothing_of_ours(path: Path) -> None:
    bad = {m for m in imports(path) if m.split(".")[0] in ("pipeline", "stages")}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "path",
    [p for p in ours("pipeline") if not module_name(p).startswith(CLI_MODULES)],
    ids=lambda p: module_name(p),
)
def test_the_store_does_not_import_the_stages_or_the_cli(path: Path) -> None:
    bad = {m for m in imports(path) if m.startswith(("stages", *CLI_MODULES))}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", ours("stages"), ids=lambda p: module_name(p))
def test_stages_do_not_import_the_cli_or_click(path: Path) -> None:
    bad = {m for m in imports(path) if m.startswith(CLI_MODULES) or m == "click"}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"
