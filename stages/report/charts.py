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
- Scenarios in sorted order in every section, targets in sorted order in every chart.
- A chart draws a bounded number of artists and points whatever the history's length: runs over
  time are re-binned (~100-200 bins, 10 ms to days wide, chosen from the run's length) and a long
  history's trend is one line per target of bin medians with a min-max band, not a marker per
  run. Drawing markers was where the time went (a year of hourly runs: 105,000 SVG elements,
  14 MB of page, seconds of matplotlib).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
from matplotlib.transforms import ScaledTranslation
from matplotlib.typing import RcKeyType

from stages.aggregate.sweeps import counted_steps, sweeps
from stages.report.data import ReportData, latest_per_target
from stages.report.text import duration, legend_line, signed_percent, usd

__all__ = [
    "PALETTE",
    "TREND_PANELS",
    "TREND_POINTS",
    "Chart",
    "Charts",
    "bin_width",
    "build_charts",
    "by_scenario",
    "distribution_charts",
    "sweep_charts",
    "latency_charts",
    "target_colors",
    "timeseries_charts",
    "trend_charts",
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

TREND_POINTS = 150
"""The most runs a trend line shows one by one; a longer history is binned to at most this many."""
_MARKERS_UP_TO = 60
"""Runs drawn with a marker each up to this many (beyond, markers only hide the line)."""
_OVER_TIME_BINS = 200
_OVER_TIME_PER_BIN = 4
"""Over-time bins hold at least this many attempts on average, so that a rate is not 0 or 1."""
_NICE_WIDTHS = (
    *(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0),
    *(m * 60.0 for m in (1, 2, 5, 10, 15, 30)),
    *(h * 3600.0 for h in (1, 2, 3, 6, 12)),
    *(d * 86400.0 for d in (1, 2, 7, 14, 30, 91, 365)),
)
"""Bin widths in seconds that read as round numbers (10 ms to a year)."""

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
_MUTED = "#777777"


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
    sweeps: tuple[Chart, ...] = ()


def target_colors(targets: Sequence[str]) -> dict[str, str]:
    """A fixed colour per target, by sorted name, so a target looks the same in every chart."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(targets)))}


def by_scenario(frame: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
    """Each scenario's rows, scenarios in sorted order: one order in every section of the page
    (grouping in the order rows came made it follow the run ids in some sections)."""
    parts = frame.partition_by("scenario", as_dict=True, maintain_order=True)
    for key in sorted(parts, key=lambda k: str(k[0])):
        yield str(key[0]), parts[key]


def bin_width(span_s: float, max_bins: float, minimum_s: float = 0.0) -> float:
    """The narrowest round width (`_NICE_WIDTHS`, seconds) of at least `minimum_s` that cuts
    `span_s` into at most `max_bins` bins: a 2 s run gets tenths of a second, a 6 h run minutes."""
    for width in _NICE_WIDTHS:
        if width >= minimum_s and span_s / width <= max_bins:
            return width
    return _NICE_WIDTHS[-1]


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


def _gaps(values: Iterable[float | None]) -> list[float]:
    """Values with each null as NaN, which matplotlib draws as a gap (None would fail)."""
    return [np.nan if v is None else v for v in values]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        # As many columns as the widest entry allows across the figure (about 5.2 pt a character
        # at 9 pt, plus the marker and the gap): six long entries in one row ran off its left edge.
        entry_pt = 5.2 * max(len(label) for label in labels) + 36
        fits = max(1, int(fig.get_figwidth() * 72 // entry_pt))
        fig.legend(handles, labels, loc="outside upper right", ncols=min(len(labels), 6, fits))


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=_MUTED)
    ax.set_xticks([])
    ax.set_yticks([])


# -- latency percentiles ------------------------------------------------------------------------


def latency_charts(latest: pl.DataFrame, colors: dict[str, str]) -> list[Chart]:
    """Per scenario: p50/p90/p95/p99 as grouped bars, one bar per target (latest run each)."""
    charts = []
    for scenario, group in by_scenario(latest):
        group = group.sort("target")
        targets = group["target"].to_list()
        width = 0.8 / max(1, len(targets))
        with _figure(9.6, 3.4) as (fig, (ax,)):
            x = np.arange(len(_PERCENTILES))
            for i, target in enumerate(targets):
                values = [group[col][i] for _, col in _PERCENTILES]
                heights = _gaps(values)
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
            chart_id = f"latency-{_slug(scenario)}"
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
    """Per scenario: ECDFs of TTFT and of inter-token latency (pooled gaps), one line per target,
    over the successful attempts."""
    frame = requests.filter(pl.col("status") == "ok").with_columns(
        (pl.col("ttft_us") / 1000.0).alias("ttft_ms"),
        (pl.col("chunk_offsets_us").list.diff(null_behavior="drop") / 1000.0).alias("itl_ms"),
    )
    charts = []
    for scenario, group in by_scenario(frame):
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
            chart_id = f"dist-{_slug(scenario)}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


# -- throughput and errors over time ------------------------------------------------------------


def _time_unit(span_s: float) -> tuple[float, str]:
    """The unit an axis of `span_s` seconds reads best in: (seconds per unit, its name)."""
    if span_s <= 180:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _rates(ends: np.ndarray[Any, np.dtype[np.float64]], span_s: float, width: float) -> Any:
    """(per-second rates, bin edges) of events ending at `ends` over [0, span_s] in bins of
    `width`; the last bin ends with the run (half a width to one and a half wide, or the whole
    run when it is shorter), so its rate is not diluted by time after the run."""
    bins = max(1, round(span_s / width))
    edges = np.append(np.arange(bins) * width, span_s)
    counts, _ = np.histogram(ends, edges)
    return counts / np.diff(edges), edges


def timeseries_charts(requests: pl.DataFrame, colors: dict[str, str]) -> list[Chart]:
    """Per scenario: completed requests and failed attempts per second over each target's latest
    run, from its request events (an attempt counts when it ended), in bins chosen from each
    run's length and size (the legend says how wide), so a 2 s run is not three steps and a 6 h
    run not 21,600."""
    keys = ["scenario", "target"]
    frame = requests.with_columns(
        (
            (
                (
                    pl.col("started_at") - pl.col("started_at").min().over(keys)
                ).dt.total_microseconds()
                + pl.col("latency_us").fill_null(0)
            )
            / 1e6
        ).alias("end_s"),
        (pl.col("status") != "ok").alias("failed"),
    )
    charts = []
    for scenario, group in by_scenario(frame):
        series = {
            str(target): (part["end_s"].to_numpy(), part["failed"].to_numpy())
            for (target,), part in sorted(group.partition_by("target", as_dict=True).items())
        }
        scale, unit = _time_unit(max(float(ends.max()) for ends, _ in series.values()))
        with _figure(9.6, 4.6, 2, 1) as (fig, axes):
            top, bottom = axes
            failures = 0
            for i, (target, (ends, failed)) in enumerate(series.items()):
                span = max(float(ends.max()), 0.001)
                most = max(1.0, min(_OVER_TIME_BINS, len(ends) / _OVER_TIME_PER_BIN))
                width = bin_width(span, most, 0.01)
                failures += int(failed.sum())
                for ax, picked in ((top, ends[~failed]), (bottom, ends[failed])):
                    rates, edges = _rates(picked, span, width)
                    ax.stairs(
                        rates,
                        edges / scale,
                        color=colors[target],
                        linestyle=_style(i),
                        lw=1.6,
                        label=f"{target} ({duration(width)} bins)",
                    )
            top.set_title(f"Throughput over the latest run: {scenario}")
            top.set_ylabel("Completed (requests/s)")
            bottom.set_title("Errors over the latest run")
            bottom.set_ylabel("Failed attempts/s")
            bottom.set_xlabel(f"Time since the run's first request ({unit})")
            for ax in axes:
                ax.set_xlim(left=0)
                ax.set_ylim(bottom=0)
                ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
            if not failures:  # a fixed axis, not matplotlib's ±0.045 around nothing
                bottom.set_ylim(0, 1)
                bottom.text(
                    0.5, 0.5, "no failed attempts", ha="center", va="center",
                    transform=bottom.transAxes, color=_MUTED,
                )  # fmt: skip
            _legend(fig, axes)
            chart_id = f"timeseries-{_slug(scenario)}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


# -- trends across runs -------------------------------------------------------------------------


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _days(values: Sequence[datetime]) -> list[float]:
    """matplotlib date numbers (days since the fixed `date.epoch`), independent of local time."""
    return [(v - _UNIX_EPOCH).total_seconds() / 86400.0 for v in values]


def _date_ticks(start: datetime, end: datetime) -> tuple[list[datetime], str, str]:
    """(tick instants, their one strftime format, what the label adds) for runs from `start` to
    `end`: clock times within two days (with seconds within a few minutes), days within three
    months, months beyond."""
    span = (end - start).total_seconds()
    # matplotlib's margins show 5% of the span on either side: ticks there are seen too.
    start, end = start - timedelta(seconds=span / 20), end + timedelta(seconds=span / 20)
    if span <= 2 * 86400:
        steps = (10, 15, 30, *(m * 60 for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360)))
        every = timedelta(seconds=next((s for s in steps if s * 6 >= span), 720 * 60))
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        fmt = "%H:%M:%S" if every < timedelta(minutes=1) else "%H:%M"
        label = " to ".join(sorted({f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"}))
    elif span <= 92 * 86400:
        every = timedelta(days=math.ceil(span / 86400 / 6))
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        fmt, label = "%b %d", "-".join(sorted({f"{start:%Y}", f"{end:%Y}"}))
    else:
        months = (end.year - start.year) * 12 + end.month - start.month
        step = max(1, math.ceil(months / 6))
        ticks, at = [], start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        while at <= end:
            if at >= start:
                ticks.append(at)
            index = at.month - 1 + step
            at = at.replace(year=at.year + index // 12, month=index % 12 + 1)
        return ticks or [start], "%Y-%m", ""
    ticks = []
    at = first
    while at <= end:
        if at >= start:
            ticks.append(at)
        at += every
    return ticks or [start], fmt, label


def _date_axis(ax: Axes, start: datetime, end: datetime) -> None:
    """Ticks in one format for the whole axis, from the span (never "50, 07:35, 10" as
    matplotlib's concise dates wrote a mix of minutes and clock times); the date in the label."""
    ticks, fmt, label = _date_ticks(start, end)
    ax.set_xticks(_days(ticks), [f"{tick:{fmt}}" for tick in ticks])
    ax.set_xlabel("Run start (UTC" + (f", {label})" if label else ")"))


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


def _profile_rows(profiles: pl.DataFrame | None, scenario: str) -> dict[str, Mapping[str, Any]]:
    """Per target, the profile that speaks for it in `scenario` (its newest row)."""
    if profiles is None or profiles.is_empty():
        return {}
    rows = profiles.filter(pl.col("scenario") == scenario).sort(["target", "updated_at"])
    return {str(row["target"]): row for row in rows.iter_rows(named=True)}


def _binned(series: pl.DataFrame, column: str, origin: datetime, width_s: float) -> pl.DataFrame:
    """The runs of one target in time bins of `width_s`: their median, lowest and highest value."""
    index = (pl.col("timestamp") - origin).dt.total_microseconds() // round(width_s * 1e6)
    return (
        series.group_by(index.alias("bin"))
        .agg(
            pl.col(column).median().alias("mid"),
            pl.col(column).min().alias("low"),
            pl.col(column).max().alias("high"),
        )
        .sort("bin")
    )


def trend_charts(
    results: pl.DataFrame, profiles: pl.DataFrame | None, colors: dict[str, str]
) -> list[Chart]:
    """Per scenario: each metric per run against the run's start time, change points marked, and
    under each panel each target's direction with its change point beside it, in the words of
    `pipeline profile`'s table. Up to `TREND_POINTS` runs a target is drawn run by run;
    beyond, every target of the chart is binned by time to at most that many points."""
    frame = results.sort(["scenario", "target", "timestamp", "run_id"])
    charts = []
    for scenario, group in by_scenario(frame):
        targets = sorted(set(group["target"].to_list()))
        start, end = group["timestamp"].min(), group["timestamp"].max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        most = group.group_by("target").len()["len"].max()
        span = (end - start).total_seconds()
        many = isinstance(most, int) and most > TREND_POINTS
        width = bin_width(span, TREND_POINTS, 3600.0) if many else None
        said = _profile_rows(profiles, scenario)
        with _figure(9.6, 5.0 + 0.36 * len(targets), 2, 2) as (fig, axes):
            for ax, (metric, column, title, scale) in zip(axes, TREND_PANELS, strict=True):
                drawn = 0
                for i, target in enumerate(targets):
                    series = group.filter(pl.col("target") == target).drop_nulls(column)
                    if series.is_empty():
                        continue
                    label = legend_line(said[target], metric) if target in said else target
                    color = colors[target]
                    if width is None:
                        ax.plot(
                            _days(series["timestamp"].to_list()),
                            (series[column] * scale).to_list(),
                            _style(i),
                            marker="o" if series.height <= _MARKERS_UP_TO else None,
                            ms=4,
                            lw=1.6,
                            color=color,
                            label=label,
                        )
                    else:
                        bins = _binned(series, column, start, width)
                        x = (bins["bin"].to_numpy() + 0.5) * width / 86400.0 + _days([start])[0]
                        ax.fill_between(
                            x,
                            bins["low"].to_numpy() * scale,
                            bins["high"].to_numpy() * scale,
                            color=color,
                            alpha=0.18,
                            lw=0,
                        )
                        mid = bins["mid"].to_numpy() * scale
                        ax.plot(x, mid, _style(i), lw=1.6, color=color, label=label)
                    drawn += 1
                marks = _change_points(profiles, scenario, metric, group)
                for k, (target, at, step) in enumerate(marks):
                    when = _days([at])[0]
                    ax.axvline(when, color=colors[target], ls="--", lw=1.2, alpha=0.8)
                    label = "change point" + (
                        f" {signed_percent(step)}" if step is not None else ""
                    )
                    ax.annotate(
                        label,
                        xy=(when, 1.0),
                        xycoords=("data", "axes fraction"),
                        xytext=(4, -4 - 11 * k),  # one under the other: steps close in time
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
                if "cost" in column:
                    ax.yaxis.set_major_formatter(FuncFormatter(usd))
                _date_axis(ax, start, end)
                # Under the axis (a fixed distance below it, whatever the panel's height).
                below = ax.transAxes + ScaledTranslation(0, -0.5, fig.dpi_scale_trans)
                ax.legend(
                    loc="upper left",
                    bbox_to_anchor=(0, 0),
                    bbox_transform=below,
                    borderaxespad=0,
                    fontsize=7.5,
                    handlelength=1.8,
                )
            binned = f", {duration(width)} medians and their range" if width else ""
            fig.suptitle(
                f"Trends across runs: {scenario}{binned}", x=0.01, ha="left", weight="bold"
            )
            chart_id = f"trends-{_slug(scenario)}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
    return charts


# -- sweeps: the throughput-latency curve and goodput against load -------------------------------

_SWEEP_Y = (
    ("latency_p50_ms", "p50 latency", "-", "o"),
    ("latency_p99_ms", "p99 latency", "--", "s"),
    ("ttft_p50_ms", "p50 TTFT", ":", "^"),
)
"""(results column, legend label, line style, marker) of the throughput-latency curve's lines."""


def _latest_sweeps(results: pl.DataFrame) -> pl.DataFrame:
    """The counted steps (`counted_steps`) of each (scenario, target)'s latest sweep."""
    tagged = results.filter(pl.col("sweep_id").is_not_null())
    if tagged.is_empty():
        return tagged
    latest = (
        tagged.group_by("scenario", "target", "sweep_id")
        .agg(pl.col("timestamp").min())
        .sort("timestamp", "sweep_id")
        .group_by("scenario", "target", maintain_order=True)
        .last()
        .select("scenario", "target", "sweep_id")
    )
    chosen = tagged.join(latest, on=["scenario", "target", "sweep_id"], how="semi")
    parts = chosen.partition_by("scenario", "target", "sweep_id", maintain_order=True)
    return pl.concat([counted_steps(part) for part in parts], how="diagonal_relaxed")


def _slo_lines(ax: Axes, steps: pl.DataFrame) -> None:
    """The SLO's latency and TTFT thresholds, as horizontal lines labelled with their value."""
    for column, what in (("slo_latency_ms", "latency"), ("slo_ttft_ms", "TTFT")):
        if column not in steps.columns:
            continue
        for value in sorted({v for v in steps[column].to_list() if v is not None}):
            ax.axhline(value, color="#B00020", lw=1.1, ls=(0, (6, 3)), zorder=1)
            ax.annotate(
                f"SLO {what} ≤ {_ms_label(value)} ms", (1.0, value), xycoords=("axes fraction", "data"),
                ha="right", va="bottom", fontsize=8, color="#B00020",
            )  # fmt: skip


def sweep_charts(results: pl.DataFrame, colors: dict[str, str]) -> list[Chart]:
    """Per scenario, from each target's latest sweep: the throughput-latency curve (throughput
    on x; p50 and p99 latency and p50 TTFT on y, one colour per target, each point labelled
    with its load; the SLO's thresholds drawn) and goodput against load (throughput dashed
    beside it; the highest load under the SLO and the knee marked)."""
    steps = _latest_sweeps(results)
    charts: list[Chart] = []
    if steps.is_empty():
        return charts
    for scenario, group in by_scenario(steps):
        targets = sorted(set(group["target"].to_list()))
        answers = {str(row["target"]): row for row in sweeps(group).iter_rows(named=True)}
        axis_names = {str(a["axis"]) for a in answers.values()}
        load_label = (
            "Concurrency (requests in flight)" if axis_names == {"concurrency"}
            else "Rate (requests/s)" if axis_names == {"rate"} else "Load (concurrency or rate)"
        )  # fmt: skip
        with _figure(9.6, 4.2) as (fig, (ax,)):
            for target in targets:
                part = group.filter(pl.col("target") == target).sort("sweep_load")
                x = _gaps(part["throughput_rps"].to_list())
                for column, label, style, marker in _SWEEP_Y:
                    y = _gaps(part[column].to_list())
                    ax.plot(
                        x, y, color=colors[target], ls=style, marker=marker, ms=4, lw=1.5,
                        label=f"{target} {label}",
                    )  # fmt: skip
                for xi, yi, load in zip(
                    x, part["latency_p50_ms"].to_list(), part["sweep_load"], strict=True
                ):
                    if yi is not None and not math.isnan(xi):
                        ax.annotate(
                            f"{load:g}", (xi, yi), textcoords="offset points", xytext=(3, 4),
                            fontsize=7, color=colors[target],
                        )  # fmt: skip
            _slo_lines(ax, group)
            ax.set_title(f"Throughput against latency: {scenario} (labels: the load)")
            ax.set_xlabel("Throughput (successful requests/s)")
            ax.set_ylabel("Latency (ms)")
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            _legend(fig, [ax])
            chart_id = f"sweep-curve-{_slug(scenario)}"
            charts.append(Chart(chart_id, f"Scenario {scenario}", _svg(fig, chart_id)))
        with _figure(9.6, 3.6) as (fig, (ax,)):
            for target in targets:
                part = group.filter(pl.col("target") == target).sort("sweep_load")
                loads = part["sweep_load"].to_list()
                ax.plot(
                    loads, _gaps(part["throughput_rps"].to_list()),
                    color=colors[target], ls="--", lw=1.1, alpha=0.7, label=f"{target} throughput",
                )  # fmt: skip
                if "goodput_rps" in part.columns and part["goodput_rps"].drop_nulls().len():
                    ax.plot(
                        loads, _gaps(part["goodput_rps"].to_list()),
                        color=colors[target], marker="o", ms=4, lw=1.7, label=f"{target} goodput",
                    )  # fmt: skip
                answer = answers.get(target, {})
                for key, value_key, marker, what in (
                    ("max_load_under_slo", "goodput_at_max_rps", "*", "max under SLO"),
                    ("knee_load", "knee_throughput_rps", "D", "knee"),
                ):
                    if answer.get(key) is not None and answer.get(value_key) is not None:
                        ax.plot(
                            [answer[key]], [answer[value_key]], marker=marker, ms=11 if marker == "*" else 7,
                            color=colors[target], mec="#222222", ls="none",
                            zorder=4 if marker == "*" else 3,  # the star stays visible on the knee
                            label=f"{target} {what} ({answer[key]:g})",
                        )  # fmt: skip
            ax.set_title(f"Goodput against load: {scenario}")
            ax.set_xlabel(load_label)
            ax.set_ylabel("Requests/s")
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            _legend(fig, [ax])
            chart_id = f"sweep-goodput-{_slug(scenario)}"
            charts.append(Chart(chart_id, f"Scenario {scenario}: goodput", _svg(fig, chart_id)))
    return charts


def build_charts(data: ReportData) -> Charts:
    """Every chart of the page from the loaded frames (empty where an input is missing)."""
    colors = target_colors(data.results["target"].to_list())
    latest = latest_per_target(data.results)
    requests = data.requests
    return Charts(
        colors=colors,
        latency=tuple(latency_charts(latest, colors)),
        distributions=tuple(distribution_charts(requests, colors) if requests is not None else ()),
        timeseries=tuple(timeseries_charts(requests, colors) if requests is not None else ()),
        trends=tuple(trend_charts(data.results, data.profiles, colors)),
        sweeps=tuple(sweep_charts(data.results, colors)),
    )
