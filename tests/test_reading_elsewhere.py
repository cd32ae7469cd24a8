"""docs/reading-elsewhere.md's snippets, run exactly as the page prints them.

The data directory is made by the real commands (`execute` against the built-in mock targets,
then events of two earlier days, `compact`, `export` and `export --format delta`), so the doc,
the export and the engines cannot drift apart: a snippet that no longer runs, or that counts
differently from a replay of the event log, fails here.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.store.eventlog import EventLog
from tests.cli_proc import run_batch
from tests.conftest import ROOT
from tests.test_export import day_batch

DOC = ROOT / "docs" / "reading-elsewhere.md"
TESTED = ["DuckDB", "pandas", "polars", "pyarrow", "Delta (polars)"]


def snippet(engine: str) -> str:
    """The first Python block under the page's `## <engine>` heading."""
    text = DOC.read_text()
    section = re.search(rf"^## {re.escape(engine)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"no section ## {engine} in {DOC}"
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert block, f"no python block under ## {engine}"
    return block.group(1)


def _pairs(rows: Any) -> dict[str, int]:
    return {str(target): int(n) for target, n in rows}


COUNTS: dict[str, Callable[[Any], dict[str, int]]] = {
    "DuckDB": _pairs,
    "pandas": lambda series: _pairs(series.items()),
    "polars": lambda frame: _pairs(frame.iter_rows()),
    "pyarrow": lambda table: _pairs(
        zip(table["target"].to_pylist(), table["target_count"].to_pylist(), strict=True)
    ),
    "Delta (polars)": lambda frame: _pairs(frame.iter_rows()),
    "Spark": lambda rows: _pairs((row["target"], row["count"]) for row in rows),
}
"""How each snippet's `counts` reads as {target: ok requests}."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("elsewhere")
    data = cwd / "data"
    (result,) = run_batch([["execute", "--requests", "12", "--seed", "3"]], cwd)
    assert result["code"] == 0, result["err"]
    log = EventLog(data)
    for day in range(2):  # two closed days, so compact and export have partitions to work on
        log.writer("old", "w0").append("requests", day_batch("old", "w0", day, 5, day))
    results = run_batch(
        [
            ["compact", "--before", "2026-02-01"],
            ["export"],
            ["export", "--format", "delta"],
        ],
        cwd,
    )
    for each in results:
        assert each["code"] == 0, each
    return cwd


def expected(data: Path) -> dict[str, int]:
    frame = EventLog(data).replay("requests").collect()
    ok = frame.filter((frame["status"] == "ok") & ~frame["warmup"])
    return dict(ok.group_by("target").len().iter_rows())


SPARK = pytest.param(
    "Spark",
    marks=[
        pytest.mark.slow,
        pytest.mark.skipif(
            importlib.util.find_spec("pyspark") is None,
            reason="pyspark is not installed (CI does not: docs/reading-elsewhere.md says so)",
        ),
    ],
)


@pytest.mark.parametrize("engine", [*TESTED, SPARK])
def test_the_documented_snippet_reads_the_export(
    workdir: Path, engine: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workdir)
    namespace: dict[str, Any] = {}
    exec(compile(snippet(engine), f"{DOC.name}:{engine}", "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out  # it prints its answer
    want = expected(workdir / "data")
    assert set(want) == {"mock-fast", "mock-slow", "w0"} and all(want.values())
    assert COUNTS[engine](namespace["counts"]) == want


def test_every_engine_on_the_page_says_whether_it_is_tested() -> None:
    text = DOC.read_text()
    for engine in ("Spark", "Ray Data"):
        section = text.split(f"## {engine}\n", 1)[1]
        assert section.lstrip().startswith("Not run in CI")
