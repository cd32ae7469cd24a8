"""`pipeline report`: a self-contained, deterministic HTML page over a realistic history.

The history goes through the real path: synthetic events (tests/eventgen.py) into the EventLog, the
aggregate, profile and recommend transforms over the replay, and their Parquet outputs written by
`write_output`, exactly as the stages write them.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import StageInputMissingError
from pipeline.store.eventlog import EventLog
from pipeline.store.layout import Layout
from schemas import ModelPrice, TrendSettings
from stages.aggregate.run import run_aggregate
from stages.profile.run import run_profile
from stages.recommend.run import run_recommend
from stages.report.charts import Charts
from stages.report.data import load_report_data
from stages.report.html import render_page
from stages.report.run import write_report
from tests.conftest import CliResult
from tests.eventgen import EPOCH, RunSpec, write_runs

Run = Callable[..., CliResult]

SCENARIOS = ("chat", "long")
TARGETS = (("mock-fast", "mock-small"), ("mock-slow", "mock-large"))
RUNS = 8
PRICES = {
    "mock-small": ModelPrice(input=0.1, output=0.4),
    "mock-large": ModelPrice(input=3, output=15),
}


def _specs() -> list[RunSpec]:
    """8 runs per (scenario, target); mock-slow's chat TTFT triples from the 5th run on (a step)."""
    specs = []
    for i in range(RUNS):
        for s, scenario in enumerate(SCENARIOS):
            for t, (target, model) in enumerate(TARGETS):
                slow = target == "mock-slow"
                step = slow and scenario == "chat" and i >= 4
                specs.append(
                    RunSpec(
                        run_id=f"r{i:02d}-{scenario}-{target}",
                        scenario=scenario,
                        target=target,
                        model=model,
                        requests=80,
                        concurrency=4,
                        ttft_ms=(240.0 if step else 80.0) if slow else 30.0,
                        itl_ms=20.0 if slow else 6.0,
                        error_rate=0.12 if slow else 0.02,
                        start=EPOCH + timedelta(hours=i, minutes=5 * s + t),
                        seed=100 * i + 10 * s + t,
                    )
                )
    return specs


def build_history(data_dir: Path) -> None:
    """Events through the real EventLog, then the aggregate, profile and recommend stages."""
    write_runs(EventLog(data_dir), _specs())
    run_aggregate(data_dir, PRICES.get)
    run_profile(data_dir, TrendSettings())
    run_recommend(data_dir)


# Building a page takes a second or more (matplotlib draws every chart), so the history and its
# page are built once for the module: tests that only read them share them, and a test that
# needs other inputs copies the history and changes only what it is about.


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("report") / "data"
    build_history(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def page_file(history: Path) -> Path:
    """The page of the history, written once by the library entry point; read, never changed."""
    return write_report(history, history.parent / "report.html").path


@pytest.fixture(scope="module")
def page(page_file: Path) -> str:
    return page_file.read_text()


def copy_history(history: Path, tmp_path: Path, *outputs: Path) -> Path:
    """A copy of the history without the given outputs (paths under `history`)."""
    data_dir = tmp_path / "data"
    shutil.copytree(history, data_dir)
    for output in outputs:
        (data_dir / output.relative_to(history)).unlink()
    return data_dir


def test_the_page_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page


def test_every_section_has_its_charts_targets_and_recommendations(history: Path, page: str) -> None:
    for section in ("summary", "latency", "distributions", "timeseries", "trends"):
        assert f'<section id="{section}">' in page
    assert '<section id="recommendations">' in page
    # One chart per scenario for each of latency, distributions, timeseries and trends.
    for kind in ("latency", "dist", "timeseries", "trends"):
        for scenario in SCENARIOS:
            figure = re.search(rf'<figure id="{kind}-{scenario}">(.*?)</figure>', page, re.S)
            assert figure and "<svg" in figure.group(1), (kind, scenario)
    assert page.count("<svg") == 4 * len(SCENARIOS)
    for target, _ in TARGETS:
        assert target in page
    recommendations = pl.read_parquet(Layout(history).recommendations)
    assert recommendations.height > 0
    for title in recommendations["title"]:
        assert html.escape(title) in page
    # The step in mock-slow's chat latency is found by profile and marked on its trend chart.
    trends = re.search(r'<figure id="trends-chat">(.*?)</figure>', page, re.S)
    assert trends and re.search(r"change point [+-]\d+%</text>", trends.group(1))


def test_every_id_in_the_page_is_unique(page: str) -> None:
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', page):
        assert ref in ids


def test_the_summary_holds_the_latest_run_of_each_target(history: Path, page: str) -> None:
    summary = page.split('<section id="summary">')[1].split("</section>")[0]
    for scenario in SCENARIOS:
        for target, _ in TARGETS:
            assert f"r{RUNS - 1:02d}-{scenario}-{target}" in summary
    assert "r00-" not in summary


def test_equal_inputs_give_byte_identical_pages(
    history: Path, page_file: Path, tmp_path: Path
) -> None:
    first = page_file.read_bytes()
    second = write_report(history, tmp_path / "b.html").path.read_bytes()
    assert first == second
    assert not list(tmp_path.glob("*.tmp"))
    # The same data under another directory: still the same bytes (no path in the page).
    shutil.copytree(history, tmp_path / "elsewhere")
    third = write_report(tmp_path / "elsewhere", tmp_path / "c.html").path.read_bytes()
    assert third == first


def test_a_missing_profile_says_which_command_builds_it(history: Path, tmp_path: Path) -> None:
    # The history as `execute` and `aggregate` leave it: profile and recommend never ran.
    layout = Layout(history)
    data_dir = copy_history(
        history, tmp_path, layout.profiles, layout.recommendations, layout.recommendations_md
    )
    written = write_report(data_dir, tmp_path / "report.html")
    page = written.path.read_text()
    assert "pipeline profile" in page and "pipeline recommend" in page
    assert {m.command for m in written.missing} == {"pipeline profile", "pipeline recommend"}
    assert "recommendations" not in written.sections
    # Trends are still charted from the results, only without the change points.
    assert "trends" in written.sections and not re.search(r"change point[^<]*</text>", page)


def test_a_missing_timeseries_leaves_the_rest(history: Path, tmp_path: Path) -> None:
    data_dir = copy_history(history, tmp_path, Layout(history).timeseries)
    written = write_report(data_dir, tmp_path / "report.html")
    assert "timeseries" not in written.sections and "latency" in written.sections
    assert "pipeline aggregate" in written.path.read_text()


def test_no_results_is_an_error_naming_aggregate(tmp_path: Path) -> None:
    with pytest.raises(StageInputMissingError, match="pipeline aggregate"):
        load_report_data(tmp_path / "data")


def test_text_from_the_data_is_escaped(history: Path) -> None:
    data = load_report_data(history)
    assert data.recommendations is not None
    hostile = data.recommendations.with_columns(pl.lit("<script>alert(1)</script>").alias("title"))
    no_charts = Charts({}, (), (), (), ())
    page = render_page(replace(data, recommendations=hostile), no_charts).html
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cli_writes_the_page_and_prints_its_path(
    cli: Run, history: Path, page_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "report.html"
    result = cli("--data-dir", str(history), "report", "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    assert out.read_bytes() == page_file.read_bytes()  # the library's page, byte for byte

    result = cli("--data-dir", str(history), "report", "--out", str(out), "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["path"] == str(out)
    assert summary["sections"] == [
        "summary",
        "latency",
        "distributions",
        "timeseries",
        "trends",
        "recommendations",
    ]


def test_cli_scenario_filter(cli: Run, history: Path, tmp_path: Path) -> None:
    out = tmp_path / "chat.html"
    result = cli("--data-dir", str(history), "report", "--out", str(out), "--scenario", "chat")
    assert result.code == 0, result.err
    page = out.read_text()
    assert 'id="latency-chat"' in page and 'id="latency-long"' not in page

    result = cli("--data-dir", str(history), "report", "--out", str(out), "--scenario", "nope")
    assert result.code == 2 and "nope" in result.err


def test_cli_without_results_exits_1(cli: Run, tmp_path: Path) -> None:
    result = cli("--data-dir", str(tmp_path / "empty"), "report", "--out", str(tmp_path / "r.html"))
    assert result.code == 1
    assert "pipeline aggregate" in result.err
    assert not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_renders_in_a_headless_browser(history: Path, page: str, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    report = history.parent / "report.html"
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile_dir:
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile_dir}",
                f"--screenshot={shot}",
                "--window-size=1280,4000",
                report.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 4000)
    # A blank page compresses to almost nothing; charts and tables do not.
    assert len(data) > 100_000
