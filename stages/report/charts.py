"""The report's charts: frames in, inline-ready SVG strings out (pure; no files, no clock).

Why matplotlib, and why this way:
- matplotlib is the long-maintained default of the Python plotting world, ships its own type hints,
  and writes static SVG, so the page needs no JavaScript and no CDN to show a chart.
- Figures are made with `matplotlib.figure.Figure` directly, never through pyplot, so no GUI backend
  or global figure registry is involved (headless by construction; nothing leaks between calls).
- Deterministic bytes: text stays text (`svg.fonttype = "none"`, smaller and selectable), ids come
  from a fixed `svg.hashsalt`, and the date/creator metadata is dropped. Every id is then prefixed
  with the chart's own id, so several SVGs inlined in one page never share an id.
- One colour per target, the same in every chart (Okabe-Ito, readable with colour-blindness).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
from matplotlib.typing import RcKeyType

from stages.report.data import ReportData, latest_per_target

__all__ = [
    "PALETTE",
    "TREND_PANELS",
    "Chart",
    "Charts",
    "build_charts",
    "distribution_charts",
    "latency_charts",
    "target_colors",
    "timeseries_charts",
    "trend_charts",
    "usd",
]

PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
"""Okabe-Ito, blue first; targets beyond eight reuse colours with a different line style."""

_PERCENTILES = tuple((f"p{q}", f"latency_p{q}_ms") for q in (50, 90, 95, 99))

TREND_PANELS = (
    ("latency", "latency_mean_ms", "Mean latency (ms)", 1.0),
    ("throughput", "throughput_rps", "Throughput (requests/s)", 1.0),
    ("error_rate", "error_rate", "Error rate (%)", 100.0),
    ("cost_efficiency", "cost_per_request_usd", "Cost per request (USD)", 1.0),
)
"""(profile metric, results column, panel title, scale). The cost panel shows cost per request and
marks the change points that `profile` found in cost efficiency (output tokens per USD)."""

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "llm-bench-report",
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "date.converter": "concise",
    "timezone": "UTC",
    "date.epoch": "1970-01-01T00:00:00",
}
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_ID_ATTR = re.compile(r'\bid="([^"]+)"')
_ID_REF = re.compile(r'(href="#|url\(#)([^")]+)')
_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_XMLNS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_ECDF_POINTS = 201
_FONT = "font-family: 'DejaVu Sans'"
_FONT_STACK = "font-family: 'DejaVu Sans', Verdana, Arial, sans-serif"
"""Text is laid out with DejaVu Sans metrics; Verdana is the closest common fallback."""


@dataclass(frozen=True)
class Chart:
    """One figure: a page-unique id, the heading it goes under, and its SVG markup."""

    id: str
    title: str
    svg: str


@dataclass(frozen=True)
class Charts:
    """Every chart of the page, by section (an empty list: no data for that section)."""

    colors: dict[str, str]
    latency: tuple[Chart, ...]
    distributions: tuple[Chart, ...]
    timeseries: tuple[Chart, ...]
    trends: tuple[Chart, ...]


def target_colors(targets: Sequence[str]) -> dict[str, str]:
    """A fixed colour per target, by sorted name, so a target looks the same in every chart."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(targets)))}


def _style(index: int) -> str:
    return ("-", "--", ":", "-.")[(index // len(PALETTE)) % 4]


@contextmanager
def _figure(
    width: float, height: float, rows: int = 1, cols: int = 1
) -> Iterator[tuple[Figure, list[Axes]]]:
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        yield fig, [ax for row in axes for ax in row]


def _svg(fig: Figure, chart_id: str) -> str:
    """SVG markup for inlining: no XML prolog or DOCTYPE, every id prefixed with `chart_id`."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = _PROLOG.sub("", buffer.getvalue(), count=1)
    text = _XMLNS.sub("", text).replace(_FONT, _FONT_STACK)
    text = _ID_ATTR.sub(lambda m: f'id="{chart_id}-{m.group(1)}"', text)
    text = _ID_REF.sub(lambda m: f"{m.group(1)}{chart_id}-{m.group(2)}", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{chart_id}" ', 1).strip()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper right", ncols=min(len(labels), 6))


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


# -- latency percentiles ------------------------------------------------------------------------


def latency_charts(latest: pl.DataFrame, colors: dict[str, str]) -> list[Chart]:
    """Per scenario: p50/p90/p95/p99 as grouped bars, one bar per target (latest run each)."""
    charts = []
    for (scenario,), group in latest.group_by(["scenario"], maintain_order=True):
        targets = group["target"].to_list()
        width = 0.8 / max(1, len(targets))
        with _figure(9.6, 3.4) as (fig, (ax,)):
            x = np.arange(len(_PERCENTILES))
            for i, target in enumerate(targets):
                values = [group[col][i] for _, col in _PERCENTILES]
                heights = [np.nan if v is None else v for v in values]
                bars = ax.bar(
                    x + (i - (len(targets) - 1) / 2) * width,
                    heights,
                    width * 0.92,
                    label=target,
                    color=colors[target],
                )
                if len(targets) <= 4:
                    ax.bar_label(bars, fmt=_ms_label, fontsize=7.5, padding=2, color="#333333")
            ax.set_xticks(x, [name for name, _ in _PERCENTILES])
            ax.set_xlabel("Percentile of end-to-end latency (successful requests)")
            ax.set_ylabel("Latency (ms)")
            ax.set_title(f"Latency percentiles: {scenario}")
            ax.grid(axis="x", visible=False)
            ax.margins(y=0.15)
            _legend(fig, [ax])
            chart_id = f"latency-{_slug(str(scenario))}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


def _ms_label(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


# -- TTFT and ITL distributions -----------------------------------------------------------------


def _ecdf(values: np.ndarray[Any, np.dtype[np.float64]]) -> tuple[list[float], list[float]]:
    """ECDF as a fixed grid of quantiles: the same look at 50 or 5 million values, small SVG."""
    shares = np.linspace(0.0, 1.0, _ECDF_POINTS)
    return np.quantile(values, shares).tolist(), (shares * 100).tolist()


def distribution_charts(requests: pl.DataFrame, colors: dict[str, str]) -> list[Chart]:
    """Per scenario: ECDFs of TTFT and of inter-token latency (pooled gaps), one line per target."""
    frame = requests.with_columns(
        (pl.col("ttft_us") / 1000.0).alias("ttft_ms"),
        (pl.col("chunk_offsets_us").list.diff(null_behavior="drop") / 1000.0).alias("itl_ms"),
    )
    charts = []
    for (scenario,), group in frame.group_by(["scenario"], maintain_order=True):
        with _figure(9.6, 3.4, 1, 2) as (fig, axes):
            panels = (
                (axes[0], "ttft_ms", "Time to first token", "TTFT (ms)"),
                (axes[1], "itl_ms", "Inter-token latency", "Gap between content chunks (ms)"),
            )
            for ax, column, title, xlabel in panels:
                drawn = 0
                for i, target in enumerate(sorted(set(group["target"].to_list()))):
                    values = group.filter(pl.col("target") == target)[column]
                    if values.dtype == pl.List(pl.Float64):
                        values = values.explode()
                    array = values.drop_nulls().to_numpy().astype(np.float64)
                    if array.size == 0:
                        continue
                    xs, ys = _ecdf(array)
                    ax.plot(xs, ys, _style(i), color=colors[target], label=target, lw=1.8)
                    drawn += 1
                if not drawn:
                    _empty(ax, "no streamed chunks in these runs")
                    continue
                ax.axhline(50, color="#999999", lw=0.8, ls=":")
                ax.set_ylim(0, 100)
                ax.yaxis.set_major_formatter(PercentFormatter())
                ax.set_title(f"{title}: {scenario}")
                ax.set_xlabel(xlabel)
                ax.set_ylabel("Requests at or below" if column == "ttft_ms" else "Gaps at or below")
            _legend(fig, axes)
            chart_id = f"dist-{_slug(str(scenario))}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


# -- throughput and errors over time ------------------------------------------------------------


def timeseries_charts(
    timeseries: pl.DataFrame, latest: pl.DataFrame, colors: dict[str, str]
) -> list[Chart]:
    """Per scenario: completed and failed requests per second over each target's latest run."""
    keys = ["run_id", "scenario", "target"]
    frame = timeseries.join(latest.select(keys), on=keys, how="semi").sort([*keys, "second"])
    charts = []
    for (scenario,), group in frame.group_by(["scenario"], maintain_order=True):
        with _figure(9.6, 4.6, 2, 1) as (fig, axes):
            top, bottom = axes
            for i, ((target,), series) in enumerate(
                group.group_by(["target"], maintain_order=True)
            ):
                seconds = series["second"].to_numpy()
                for ax, column in ((top, "completed"), (bottom, "errors")):
                    ax.plot(
                        seconds,
                        series[column].to_numpy(),
                        _style(i),
                        color=colors[str(target)],
                        lw=1.6,
                        drawstyle="steps-mid",
                        label=str(target),
                    )
            top.set_title(f"Throughput over the latest run: {scenario}")
            top.set_ylabel("Completed (requests/s)")
            bottom.set_title("Errors over the latest run")
            bottom.set_ylabel("Failed attempts/s")
            bottom.set_xlabel("Seconds since the run's first request")
            for ax in axes:
                ax.set_ylim(bottom=0)
                ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            _legend(fig, axes)
            chart_id = f"timeseries-{_slug(str(scenario))}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


# -- trends across runs -------------------------------------------------------------------------


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _days(values: Sequence[datetime]) -> list[float]:
    """matplotlib date numbers (days since the fixed `date.epoch`), independent of local time."""
    return [(v - _UNIX_EPOCH).total_seconds() / 86400.0 for v in values]


def usd(value: float, _pos: int | None = None) -> str:
    """Dollars to three significant digits, never in e-notation ($0.0000282, $0.00084, $12.50)."""
    if value == 0 or not math.isfinite(value):
        return "$0" if value == 0 else f"${value}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    digits = max(2, 2 - math.floor(math.log10(abs(value))))
    return "$" + f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _change_points(
    profiles: pl.DataFrame | None, scenario: str, metric: str, results: pl.DataFrame
) -> list[tuple[str, datetime, float | None]]:
    """(target, run start, relative step) of each change point `profile` found for `metric`."""
    column = f"{metric}_change_point_run_id"
    if profiles is None or column not in profiles.columns:
        return []
    marks = []
    rows = profiles.filter(pl.col("scenario") == scenario).sort("target")
    for row in rows.iter_rows(named=True):
        run_id = row[column]
        if run_id is None:
            continue
        at = results.filter(
            (pl.col("run_id") == run_id)
            & (pl.col("scenario") == scenario)
            & (pl.col("target") == row["target"])
        )["timestamp"]
        if len(at):
            step = row.get(f"{metric}_change_point_relative_change")
            marks.append((str(row["target"]), at[0], step))
    return marks


def trend_charts(
    results: pl.DataFrame, profiles: pl.DataFrame | None, colors: dict[str, str]
) -> list[Chart]:
    """Per scenario: each metric per run against the run's start time, change points marked."""
    frame = results.sort(["scenario", "target", "timestamp", "run_id"])
    charts = []
    for (scenario,), group in frame.group_by(["scenario"], maintain_order=True):
        with _figure(9.6, 5.6, 2, 2) as (fig, axes):
            targets = sorted(set(group["target"].to_list()))
            for ax, (metric, column, title, scale) in zip(axes, TREND_PANELS, strict=True):
                drawn = 0
                for i, target in enumerate(targets):
                    series = group.filter(pl.col("target") == target).drop_nulls(column)
                    if series.is_empty():
                        continue
                    ax.plot(
                        _days(series["timestamp"].to_list()),
                        (series[column] * scale).to_list(),
                        _style(i),
                        marker="o",
                        ms=4,
                        lw=1.6,
                        color=colors[target],
                        label=target,
                    )
                    drawn += 1
                for target, at, step in _change_points(profiles, str(scenario), metric, group):
                    when = _days([at])[0]
                    ax.axvline(when, color=colors[target], ls="--", lw=1.2, alpha=0.8)
                    label = "change point" + (f" {step:+.0%}" if step is not None else "")
                    ax.annotate(
                        label,
                        xy=(when, 1.0),
                        xycoords=("data", "axes fraction"),
                        xytext=(4, -4),
                        textcoords="offset points",
                        va="top",
                        fontsize=7.5,
                        color=colors[target],
                        bbox={
                            "boxstyle": "round,pad=0.2",
                            "fc": "white",
                            "ec": "none",
                            "alpha": 0.9,
                        },
                    )
                ax.set_title(title)
                if not drawn:
                    _empty(ax, "no values (unpriced model?)" if "cost" in column else "no values")
                    continue
                ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # headroom for the change-point labels
                ax.set_xlabel("Run start (UTC)")
                if "cost" in column:
                    ax.yaxis.set_major_formatter(FuncFormatter(usd))
                ax.xaxis_date("UTC")
            _legend(fig, axes)
            fig.suptitle(f"Trends across runs: {scenario}", x=0.01, ha="left", weight="bold")
            chart_id = f"trends-{_slug(str(scenario))}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


def build_charts(data: ReportData) -> Charts:
    """Every chart of the page from the loaded frames (empty where an input is missing)."""
    colors = target_colors(data.results["target"].to_list())
    latest = latest_per_target(data.results)
    return Charts(
        colors=colors,
        latency=tuple(latency_charts(latest, colors)),
        distributions=tuple(
            distribution_charts(data.requests, colors) if data.requests is not None else ()
        ),
        timeseries=tuple(
            timeseries_charts(data.timeseries, latest, colors)
            if data.timeseries is not None
            else ()
        ),
        trends=tuple(trend_charts(data.results, data.profiles, colors)),
    )
