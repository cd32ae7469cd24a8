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
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.errors import StageInputMissingError
from pipeline.store.eventlog import EventLog
from pipeline.store.layout import RESULTS, Layout
from pipeline.store.location import open_store
from pipeline.store.outputs import write_output
from schemas import CompareSettings, ModelPrice, RecommendSettings, TrendSettings
from stages.aggregate.run import run_aggregate
from stages.profile.run import run_profile
from stages.recommend.run import run_recommend
from stages.report.charts import TREND_POINTS
from stages.report.data import ReportData, load_report_data
from stages.report.html import SECTIONS
from stages.report.run import build_page, write_report
from tests.conftest import CliResult
from tests.eventgen import EPOCH, RunSpec, write_runs
from tests.results_factory import earlier_runs

Run = Callable[..., CliResult]

SCENARIOS = ("chat", "long")
TARGETS = (("mock-fast", "mock-small"), ("mock-slow", "mock-large"))
RUNS = 8
PRICES = {
    "mock-small": ModelPrice(input=0.1, output=0.4),
    "mock-large": ModelPrice(input=3, output=15),
}


def started(i: int, s: int, t: int) -> datetime:
    """When run `i` of scenario `s` on target `t` starts: hourly, the last scenario first."""
    return EPOCH + timedelta(hours=i, minutes=5 * (len(SCENARIOS) - 1 - s) + t)


def run_id(i: int, s: int, t: int) -> str:
    """As `execute` names runs: the start time, then a suffix (a hyphen, where a line may break).
    The last scenario runs first, so the run ids' order is not the scenarios'."""
    return f"{started(i, s, t):%Y%m%dT%H%M%SZ}-{100 * i + 10 * s + t:06x}"


RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{6}"


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
                        run_id=run_id(i, s, t),
                        scenario=scenario,
                        target=target,
                        model=model,
                        requests=80,
                        concurrency=4,
                        ttft_ms=(240.0 if step else 80.0) if slow else 30.0,
                        itl_ms=20.0 if slow else 6.0,
                        error_rate=0.12 if slow else 0.02,
                        start=started(i, s, t),
                        seed=100 * i + 10 * s + t,
                    )
                )
    return specs


def build_history(data_dir: Path) -> None:
    """Events through the real EventLog, then the aggregate, profile and recommend stages."""
    write_runs(EventLog(data_dir), _specs())
    run_aggregate(data_dir, PRICES.get)
    run_profile(data_dir, TrendSettings())
    run_recommend(data_dir, RecommendSettings(), CompareSettings())


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


def section(page: str, anchor: str) -> str:
    """The markup of one section of the page."""
    return page.split(f'<section id="{anchor}">')[1].split("</section>")[0]


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
    assert trends and re.search(r"change point [+-]\d+\.\d%</text>", trends.group(1))


def test_every_id_in_the_page_is_unique(page: str) -> None:
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', page):
        assert ref in ids


def test_the_summary_holds_the_latest_run_of_each_target(history: Path, page: str) -> None:
    summary = section(page, "summary")
    for s in range(len(SCENARIOS)):
        for t in range(len(TARGETS)):
            assert run_id(RUNS - 1, s, t) in summary
            assert run_id(0, s, t) not in summary


def test_equal_inputs_give_byte_identical_pages(
    history: Path, page_file: Path, tmp_path: Path
) -> None:
    # The same data under another directory: the same bytes (no path, nothing from the clock).
    # A rebuild from the same directory is compared with this page too, by the CLI test.
    shutil.copytree(history, tmp_path / "elsewhere")
    again = write_report(tmp_path / "elsewhere", tmp_path / "again.html").path.read_bytes()
    assert again == page_file.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


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


def test_missing_request_events_leave_the_rest(history: Path, tmp_path: Path) -> None:
    # The distributions and the over-time charts are drawn from the latest runs' request
    # events (not the per-second time series, removed too: it is not needed); without them both
    # say which command records them, and the rest is drawn.
    data_dir = copy_history(history, tmp_path, Layout(history).timeseries)
    shutil.rmtree(data_dir / "events" / "requests")
    written = write_report(data_dir, tmp_path / "report.html")
    assert {"distributions", "timeseries"}.isdisjoint(written.sections)
    assert {"latency", "trends"} <= set(written.sections)
    assert [m.command for m in written.missing] == ["pipeline execute"]
    page = written.path.read_text()
    for anchor in ("distributions", "timeseries"):
        assert "Not built yet: run <code>pipeline execute</code>" in section(page, anchor)


def test_no_results_is_an_error_naming_aggregate(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(StageInputMissingError, match="pipeline aggregate"):
        load_report_data(tmp_path / "data")


def planted(name: str) -> str:
    """Markup planted in the data, one per column so each can be found in the page."""
    return f"--><script>alert('{name}')</script>\"><img src=x onerror=alert('{name}')>&amp;"


def plant_markup(data: ReportData) -> ReportData:
    """Every text of every frame with markup appended (nulls too), and hostile evidence.

    The same column gets the same text in every frame, so the frames still join (the latest
    runs, their request events and time series) and every chart is drawn.
    """

    def plant(frame: pl.DataFrame | None, *codes: str) -> pl.DataFrame:
        """`codes`: columns of fixed words the report only compares, never shows."""
        assert frame is not None  # the history has every input
        return frame.with_columns(
            *(
                pl.col(c).fill_null("") + planted(c)
                for c, t in frame.schema.items()
                if t == pl.String and c not in codes
            ),
            *(
                pl.col(c).list.eval(pl.element() + planted(c))
                for c, t in frame.schema.items()
                if t == pl.List(pl.String)
            ),
        )

    recs = plant(data.recommendations)
    assert recs.height >= 3
    evidence = [
        json.dumps({planted("evidence-key"): planted("evidence-value"), "n": [planted("item")]}),
        "not JSON\n    " + planted("evidence-raw"),
        json.dumps([planted("evidence-list")]),
    ]
    recs = recs.with_columns(
        pl.Series("evidence", evidence + recs["evidence"].to_list()[3:], dtype=pl.String)
    )
    return replace(
        data,
        results=plant(data.results),
        profiles=plant(data.profiles).with_columns(pl.lit(True).alias("regression")),
        recommendations=recs,
        requests=plant(data.requests, "status"),
    )


class Elements(HTMLParser):
    """Every element and every text of a page, as a browser's parser splits them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attributes: set[str] = set()
        self.texts: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attributes |= {name for name, _ in attrs}

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


# Every text of the data the page shows. (It shows no scenario description, run message or
# error message: none of them is read by the report.)
SHOWN = (
    "run_id",  # results, in the summary
    "scenario",
    "target",
    "provider",
    "model",
    "run_status",
    "regression_reasons",  # profiles, in the trend table
    "latency_change_point_run_id",
    "throughput_change_point_run_id",
    "priority",  # recommendations
    "rule_id",
    "category",
    "title",
    "description",
    "expected_impact",
    "evidence_run_ids",
    "evidence-key",
    "evidence-value",
    "item",
    "evidence-raw",
)


def test_markup_in_the_data_is_only_ever_text(history: Path, page: str) -> None:
    """Markup in any text of the data stays text: no element or handler it spells gets in."""
    hostile = build_page(plant_markup(load_report_data(history))).html
    clean, parsed = Elements(page), Elements(hostile)
    injected = {tag: parsed.tags[tag] for tag in ("script", "img") if parsed.tags[tag]}
    assert not injected, f"markup from the data became elements: {injected}"
    assert set(parsed.tags) <= set(clean.tags), set(parsed.tags) - set(clean.tags)
    assert not [name for name in parsed.attributes if name.startswith("on")]
    # Each planted text is on the page, whole, as text (`&amp;` not unescaped to `&`), charts
    # included: their SVG, the one input trusted as markup, escapes what it draws.
    expected = [planted(name) for name in SHOWN] + [json.dumps([planted("evidence-list")])]
    # The templates' own line breaks are not written; those of a value are, as they are.
    expected.append("not JSON\n    " + planted("evidence-raw"))
    for text in expected:
        assert any(text in shown for shown in parsed.texts), text
    charts = "".join(re.findall(r"<svg\b.*?</svg>", hostile, re.S))
    assert html.escape(planted("scenario"), quote=False) in charts  # drawn, escaped by matplotlib
    assert parsed.tags["svg"] == clean.tags["svg"] == 4 * len(SCENARIOS)


def test_cli_writes_the_page_and_prints_its_path(
    cli: Run, history: Path, page_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "report.html"
    result = cli("--data-dir", str(history), "report", "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    # The library's page, byte for byte: a rebuild from the same data gives the same bytes.
    assert out.read_bytes() == page_file.read_bytes()

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
    (tmp_path / "empty").mkdir()
    result = cli("--data-dir", str(tmp_path / "empty"), "report", "--out", str(tmp_path / "r.html"))
    assert result.code == 1
    assert "pipeline aggregate" in result.err
    assert not (tmp_path / "r.html").exists()


def svg_of(page: str, chart_id: str) -> str:
    """The SVG of one chart of the page."""
    found = re.search(rf'<figure id="{chart_id}">.*?(<svg\b.*?</svg>)', page, re.S)
    assert found, chart_id
    return found.group(1)


def svg_texts(svg: str) -> list[str]:
    """Every text a chart draws (matplotlib writes each line of a label as its own element)."""
    return [html.unescape(t) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S)]


def tick_labels(svg: str, axis: str) -> list[str]:
    """The labels of every `axis` ("xtick" or "ytick") tick of a chart, in drawing order."""
    return [
        html.unescape(m.group(1))
        for part in re.split(rf'<g id="[^"]*-{axis}_\d+">', svg)[1:]
        if (m := re.search(r"<text\b[^>]*>(.*?)</text>", part, re.S))
    ]


def trend_cells(page: str) -> list[tuple[str, str, list[str]]]:
    """(scenario, target, the four metric cells' text) of each row of the trend table."""
    table = section(page, "trends").split("<tbody>")[1].split("</tbody>")[0]
    rows = []
    for row in table.split("<tr>")[1:]:
        cells = [re.sub(r"<[^>]+>", " ", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        cells = [html.unescape(" ".join(c.split())) for c in cells]
        rows.append((cells[0], cells[1], cells[3:7]))
    return rows


METRICS = ("latency", "throughput", "error_rate", "cost_efficiency")


def test_a_change_point_is_shown_beside_its_trend_as_the_gate_says_it(
    history: Path, page: str
) -> None:
    """Every change point `pipeline profile` found is in the trend table's cell and in the trend
    chart's legend, beside the direction, with the size the gate's message gives it; and the
    table's regressions are the rows `--fail-on-regression` exits 3 for."""
    profiles = pl.read_parquet(Layout(history).profiles).sort(["scenario", "target"])
    cells = trend_cells(page)
    assert [(r[0], r[1]) for r in cells] == list(
        zip(profiles["scenario"], profiles["target"], strict=True)
    )
    steps = 0
    for row, (_, _, texts) in zip(profiles.iter_rows(named=True), cells, strict=True):
        legend = svg_texts(svg_of(page, f"trends-{row['scenario']}"))
        for metric, text in zip(METRICS, texts, strict=True):
            run = row[f"{metric}_change_point_run_id"]
            direction = row[f"{metric}_trend"].replace("_", " ")
            assert direction in text or direction == "insufficient data", (metric, text)
            if run is None:
                assert "step" not in text, text
                continue
            steps += 1
            arrow = "▼" if row[f"{metric}_change_point_direction"] == "degrading" else "▲"
            if arrow == "▼":  # the gate's words for it: "latency stepped +52.1% at run ..."
                said = re.search(rf"{metric} stepped ([+-]\d+\.\d%) at run {run}",
                                 row["regression_reasons"])  # fmt: skip
                assert said, row["regression_reasons"]
                size = said.group(1)
            else:
                size = f"{row[f'{metric}_change_point_relative_change'] * 100:+.1f}%"
            assert f"{arrow} step {size}" in text and run in text, text
            # The legend says it in the words of `pipeline profile`'s table.
            assert any(t.endswith(f"step {size} at {run}") for t in legend), legend
        for metric in METRICS:
            trend = row[f"{metric}_trend"]
            assert any(t.startswith(f"{row['target']}: {trend}") for t in legend), legend
    assert steps >= 2  # the history's step in mock-slow's chat latency (and throughput)
    regressions = section(page, "trends").count('<span class="tag high">yes</span>')
    assert regressions == profiles["regression"].sum() >= 1


def test_a_confidence_is_never_rounded_up_to_its_threshold(history: Path, tmp_path: Path) -> None:
    """With the threshold just above a confidence that two decimals would round up to it, that
    confidence shows below the threshold (and every other one on the side it is on)."""
    confidences = pl.read_parquet(Layout(history).profiles).select(
        pl.concat_list(f"{m}_confidence" for m in METRICS).explode()
    )
    close = [c for c in confidences.to_series() if c is not None and round(c, 2) > c]
    assert close, "the history has no confidence that rounds up"
    threshold = round(close[0], 2)
    settings = TrendSettings(confidence_threshold=threshold)
    data_dir = copy_history(history, tmp_path)
    run_profile(data_dir, settings)
    page = write_report(data_dir, tmp_path / "report.html", trends=settings).path.read_text()
    profiles = pl.read_parquet(Layout(data_dir).profiles).sort(["scenario", "target"])
    shown = 0
    for row, (_, _, texts) in zip(profiles.iter_rows(named=True), trend_cells(page), strict=True):
        for metric, text in zip(METRICS, texts, strict=True):
            found = re.search(r"confidence (\d\.\d+)", text)
            if found is None:
                continue
            exact, written = row[f"{metric}_confidence"], float(found.group(1))
            assert (written >= threshold) == (exact >= threshold), (exact, text)
            assert written <= exact
            shown += exact == close[0]
    assert shown >= 1


def figure_ids(page: str, anchor: str) -> list[str]:
    return re.findall(r'<figure id="([^"]+)">', section(page, anchor))


def test_every_section_shows_the_scenarios_in_one_sorted_order(page: str) -> None:
    # The history's run ids sort the other way (its last scenario runs first each hour).
    assert run_id(0, 1, 0) < run_id(0, 0, 0)
    order = sorted(SCENARIOS)
    for anchor, kind in (
        ("latency", "latency"),
        ("distributions", "dist"),
        ("timeseries", "timeseries"),
        ("trends", "trends"),
    ):
        assert figure_ids(page, anchor) == [f"{kind}-{s}" for s in order], anchor
    summary = re.findall(r"<tr><td>([^<]+)</td>", section(page, "summary"))
    trends = [scenario for scenario, _, _ in trend_cells(page)]
    assert summary == trends == sorted(summary) and set(summary) == set(order)


def test_over_time_bins_follow_the_length_of_each_run(history: Path, page: str) -> None:
    """Each run is cut into tens of bins, a short one in tenths of a second (per-second
    counts made a 2 s run three steps), and the axes say their units."""
    latest = (
        pl.read_parquet(Layout(history).results)
        .sort("timestamp")
        .group_by(["scenario", "target"], maintain_order=True)
        .last()
    )
    units = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
    for row in latest.iter_rows(named=True):
        texts = svg_texts(svg_of(page, f"timeseries-{row['scenario']}"))
        label = next(t for t in texts if t.startswith(f"{row['target']} ("))
        found = re.fullmatch(rf"{row['target']} \(([\d.]+) (ms|s|min|h) bins\)", label)
        assert found, label
        bins = row["duration_s"] / (float(found.group(1)) * units[found.group(2)])
        assert 10 <= bins <= 200, (row["duration_s"], label)
        assert "Time since the run's first request (s)" in texts
        assert "Completed (requests/s)" in texts and "Failed attempts/s" in texts
    short = latest.filter(pl.col("target") == "mock-fast")["duration_s"].max()
    assert isinstance(short, float) and short < 5  # the history has runs of a few seconds


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six error-free runs of one pair, 20 s apart (a minute of history), aggregated: its page."""
    data_dir = tmp_path_factory.mktemp("quiet") / "data"
    start = datetime(2026, 3, 2, 7, 34, 30, tzinfo=EPOCH.tzinfo)
    write_runs(
        EventLog(data_dir),
        [
            RunSpec(
                f"quiet-{i}", requests=40, error_rate=0.0, start=start + timedelta(seconds=20 * i)
            )
            for i in range(6)
        ],
    )
    run_aggregate(data_dir, PRICES.get)
    return write_report(data_dir, data_dir.parent / "report.html").path


def test_an_error_panel_without_errors_says_so_on_a_fixed_axis(quiet: Path) -> None:
    svg = svg_of(quiet.read_text(), "timeseries-chat")
    assert "no failed attempts" in svg_texts(svg)
    ticks = tick_labels(svg, "ytick")
    assert ticks[-1] == "1.0", ticks  # the error panel's axis: 0 to 1, not 0 to 0.045
    assert not [t for t in ticks if re.fullmatch(r"0\.0\d+", t)], ticks


def date_formats(labels: list[str]) -> set[str]:
    """Which format each tick label is in."""
    formats = {
        "clock": r"\d\d:\d\d",
        "clock with seconds": r"\d\d:\d\d:\d\d",
        "day": r"[A-Z][a-z]{2} \d\d",
        "month": r"\d{4}-\d\d",
    }
    return {next((n for n, f in formats.items() if re.fullmatch(f, t)), t) for t in labels}


@pytest.mark.parametrize("which", ["history", "quiet"])
def test_trend_axes_write_every_date_in_one_format(which: str, page: str, quiet: Path) -> None:
    """A minute of runs reads "07:34:40, 07:35:00, ...", not matplotlib's "50, 07:35, 10"."""
    text = page if which == "history" else quiet.read_text()
    for chart in figure_ids(text, "trends"):
        labels = tick_labels(svg_of(text, chart), "xtick")
        assert len(labels) >= 8 and len(date_formats(labels)) == 1, labels
        assert "clock with seconds" in date_formats(labels) or which == "history"


def test_a_long_history_is_drawn_as_a_line_per_target(history: Path, tmp_path: Path) -> None:
    """400 hourly runs per target: binned medians with their range, no marker per run, a small
    page, and days on the axis."""
    data_dir = copy_history(history, tmp_path)
    layout = Layout(data_dir)
    results = pl.read_parquet(layout.results)
    longer = pl.concat([earlier_runs(results, 400 - RUNS), results])
    write_output(open_store(data_dir), longer, RESULTS, ["run_id", "scenario", "target"])
    run_profile(data_dir, TrendSettings())
    page = write_report(data_dir, tmp_path / "report.html").path.read_text()
    for scenario in SCENARIOS:
        svg = svg_of(page, f"trends-{scenario}")
        # A marker is a <use> each, as are the ticks and the bands: 3,200 markers before.
        assert svg.count("<use ") < 150
        assert len(svg) < 150_000, len(svg)
        assert any("medians and their range" in t for t in svg_texts(svg))
        assert date_formats(tick_labels(svg, "xtick")) == {"day"}
    # Each line has at most TREND_POINTS points: the paths' vertices, two panels' worth.
    points = [len(re.findall(r"L ", d)) for d in re.findall(r'<path d="([^"]+)"', page)]
    assert max(points) < 2 * TREND_POINTS


def recommendation_evidence(page: str) -> list[str]:
    return re.findall(r'<article class="rec [^"]+">.*?(<dl>.*?</dl>)', page, re.S)


def test_evidence_is_written_for_people_and_names_each_run_once(page: str) -> None:
    evidence = recommendation_evidence(page)
    assert len(evidence) >= 3
    for dl in evidence:
        text = html.unescape(re.sub(r"<[^>]+>", " ", dl))
        assert not re.search(r"\d[eE][+-]?\d", text), text  # no 2.68e-05
        runs = Counter(re.findall(RUN_ID, text))
        assert runs and max(runs.values()) == 1, runs
    assert any("$0.0000" in dl for dl in evidence)  # a cost per request, in dollars


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)
DESKTOP, PHONE = 1400, 390
"""Widths in CSS px: a laptop's browser window, and a phone's (390: iPhone 12 to 15)."""

# The page has no script, so what the browser laid out is measured by a probe page of the test's
# own: it holds the report once per width, in a frame exactly that wide (srcdoc: no file access
# needed), and writes what it measured into its own DOM, which `--dump-dom` prints.
PROBE = """
function measure(frame) {
  const win = frame.contentWindow, doc = win.document, width = doc.documentElement.clientWidth;
  const style = element => win.getComputedStyle(element);
  return {
    window: win.innerWidth,
    width: width,
    scroll: doc.documentElement.scrollWidth,
    sections: [...doc.querySelectorAll("section")].map(section => ({
      id: section.id,
      heading: section.querySelector("h2").textContent,
      height: section.getBoundingClientRect().height,
      shown: style(section).display !== "none" && style(section).visibility === "visible",
    })),
    charts: [...doc.querySelectorAll("figure > svg")].map(svg => {
      const box = svg.getBoundingClientRect(), view = svg.viewBox.baseVal;
      return {width: box.width, height: box.height, right: box.right,
              column: svg.parentElement.clientWidth, shape: view.height / view.width};
    }),
    labels: [...doc.querySelectorAll("svg text")].map(text => text.getComputedTextLength()),
    outside: [...doc.querySelectorAll("body *")]
      .filter(e => e.getBoundingClientRect().right > width + 0.5 && !e.closest("table"))
      .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")),
    dead_links: [...doc.querySelectorAll("a[href^='#']")]
      .filter(a => !doc.getElementById(a.hash.slice(1))).map(a => a.hash),
    fetched: win.performance.getEntriesByType("resource").map(entry => entry.name),
    runs: runIds(doc),
  };
}
// Every run id in the page's text, with the number of line boxes it is laid out on.
function runIds(doc) {
  const found = [], walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    if (node.parentElement.closest("svg")) continue;
    for (const match of node.data.matchAll(RUN_ID)) {
      const range = doc.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      found.push([match[0], range.getClientRects().length]);
    }
  }
  return found;
}
addEventListener("load", () => {
  const seen = {};
  for (const frame of document.querySelectorAll("iframe")) seen[frame.width] = measure(frame);
  document.getElementById("probe").textContent = JSON.stringify(seen);
});
"""


@pytest.fixture(scope="module")
def laid_out(page: str, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """What headless Chromium laid out at each width, from one browser run."""
    assert CHROMIUM is not None
    work = tmp_path_factory.mktemp("browser")
    frames = "".join(
        f'<iframe width="{w}" height="900" srcdoc="{html.escape(page)}"></iframe>'
        for w in (DESKTOP, PHONE)
    )
    probe = work / "probe.html"
    probe.write_text(
        f'<!DOCTYPE html><html><body style="margin:0">{frames}<pre id="probe"></pre>'
        f"<script>const RUN_ID = /{RUN_ID}/g;{PROBE}</script></body></html>"
    )
    done = subprocess.run(
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
            f"--user-data-dir={work / 'profile'}",
            "--window-size=1800,1000",
            "--dump-dom",
            probe.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    measured = re.search(r'<pre id="probe">(.+?)</pre>', done.stdout, re.S)
    assert measured, f"the probe wrote nothing; chromium said: {done.stderr[-2000:]}"
    return {int(w): view for w, view in json.loads(html.unescape(measured.group(1))).items()}


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_the_page_renders_in_a_headless_browser(
    laid_out: dict[int, dict[str, Any]], width: int
) -> None:
    """Every section, chart and label is laid out and visible, on a desktop and on a phone."""
    view = laid_out[width]
    assert view["window"] == width
    assert [(s["id"], s["heading"]) for s in view["sections"]] == list(SECTIONS)
    assert all(s["shown"] and s["height"] > 50 for s in view["sections"]), view["sections"]
    assert len(view["charts"]) == 4 * len(SCENARIOS)
    for chart in view["charts"]:
        # Each chart fills the text column, inside the window, and keeps its shape.
        assert chart["width"] > 300 and abs(chart["width"] - chart["column"]) < 1, chart
        assert chart["right"] <= view["width"], chart
        assert chart["height"] / chart["width"] == pytest.approx(chart["shape"], rel=0.01)
    # Every label of every chart is drawn (the text is text: it needs a font to be seen).
    assert len(view["labels"]) > 100 and min(view["labels"]) > 0
    # Nothing but a table is wider than the window; every link lands; nothing was fetched.
    assert view["outside"] == [], view["outside"]
    assert view["dead_links"] == [] and view["fetched"] == []


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_the_page_needs_no_sideways_scrolling(
    laid_out: dict[int, dict[str, Any]], width: int
) -> None:
    # Wide tables scroll sideways inside their own box; the page itself never does.
    view = laid_out[width]
    assert view["scroll"] <= view["width"], f"{view['scroll']} px wide in a {width} px window"


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_no_run_id_is_broken_across_lines(laid_out: dict[int, dict[str, Any]], width: int) -> None:
    runs = laid_out[width]["runs"]
    assert len(runs) > 10  # the summary, the trend table, the recommendations
    assert [run for run, lines in runs if lines != 1] == []
