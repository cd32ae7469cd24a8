"""profile's pure transform: benchmark results in, one trend row per (provider, model, scenario, target).

One summary value per run, never pooled requests. Runs compare like with like: a series holds the
runs at the latest run's concurrency and mode (a sweep over concurrencies is not a trend), and
only runs whose status is completed or timed_out (an interrupted run is partial). The steps of
`pipeline sweep` stay out of it when the key has ordinary runs: they are trended instead as one
value per sweep, its answer (`capacity`: the highest load that met the SLO, 0 when none did), over
the sweeps on the latest sweep's axis and SLO (capacity under another SLO is not a trend), so
"is the capacity under SLO shrinking week on week" is a trend, and the gate can fire on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from schemas import (
    MIN_TREND_POINTS,
    MetricTrend,
    PerformanceProfile,
    TrendDetail,
    TrendMetrics,
    TrendSettings,
)
from stages.aggregate.sweeps import sweeps
from stages.profile.display import confidence_text, p_value_text
from stages.profile.trends import TrendOutcome, analyze_trend

__all__ = [
    "CAPACITY",
    "METRICS",
    "PROFILE_KEYS",
    "PROFILE_SCHEMA",
    "TRENDED",
    "Metric",
    "profile",
    "to_performance_profile",
]

PROFILE_KEYS = ("provider", "model", "scenario", "target")
TRENDED_STATUSES = ("completed", "timed_out")


@dataclass(frozen=True)
class Metric:
    name: str
    column: str
    higher_is_better: bool


METRICS = (
    Metric("latency", "latency_mean_ms", higher_is_better=False),
    Metric("throughput", "throughput_rps", higher_is_better=True),
    Metric("error_rate", "error_rate", higher_is_better=False),
    Metric("cost_efficiency", "cost_efficiency", higher_is_better=True),
)
"""cost_efficiency: output tokens per USD (null when the price is unknown)."""
CAPACITY = Metric("capacity", "capacity", higher_is_better=True)
"""Per sweep (not per run): `max_load_under_slo` of `results/sweeps.parquet` (0: none met)."""
TRENDED = (*METRICS, CAPACITY)
"""Every trended metric, in column order; `capacity`'s change point names a sweep id."""

_F, _I, _S = pl.Float64(), pl.Int64(), pl.String()
_TS = pl.Datetime("us", "UTC")
_LATEST = (
    ("latest_latency_mean_ms", "latency_mean_ms"),
    ("latest_latency_p50_ms", "latency_p50_ms"),
    ("latest_latency_p95_ms", "latency_p95_ms"),
    ("latest_ttft_p50_ms", "ttft_p50_ms"),
    ("latest_throughput_rps", "throughput_rps"),
    ("latest_error_rate", "error_rate"),
    ("latest_cost_per_request_usd", "cost_per_request_usd"),
    ("latest_cost_efficiency", "cost_efficiency"),
)

PROFILE_SCHEMA = pl.Schema(
    [
        *((key, _S) for key in PROFILE_KEYS),
        ("concurrency", _I),
        ("mode", _S),
        ("data_points", _I),
        ("runs_excluded", _I),
        ("first_run_id", _S),
        ("latest_run_id", _S),
        ("sweeps", _I),
        ("latest_sweep_id", _S),
        ("latest_capacity", _F),
        ("capacity_axis", _S),
        ("capacity_slo", _S),
        ("created_at", _TS),
        ("updated_at", _TS),
        *((name, _F) for name, _ in _LATEST),
        *(
            col
            for m in TRENDED
            for col in (
                (f"{m.name}_trend", _S),
                (f"{m.name}_relative_change", _F),
                (f"{m.name}_confidence", _F),
                (f"{m.name}_change_point_run_id", _S),
                (f"{m.name}_change_point_relative_change", _F),
                (f"{m.name}_change_point_direction", _S),
                (f"{m.name}_change_point_p", _F),
            )
        ),
        ("overall_confidence", _F),
        ("regression", pl.Boolean()),
        ("regression_reasons", _S),
    ]
)
"""The columns of profiles/performance_profiles.parquet, in order."""


def _metric_columns(
    metric: Metric, outcome: TrendOutcome, run_ids: Sequence[str]
) -> dict[str, Any]:
    point = outcome.change_point
    return {
        f"{metric.name}_trend": outcome.direction,
        f"{metric.name}_relative_change": outcome.relative_change,
        f"{metric.name}_confidence": outcome.confidence,
        f"{metric.name}_change_point_run_id": run_ids[point] if point is not None else None,
        f"{metric.name}_change_point_relative_change": outcome.step_relative_change,
        f"{metric.name}_change_point_direction": outcome.change_point_direction,
        f"{metric.name}_change_point_p": outcome.change_point_p,
    }


def _reasons(
    metric: Metric, outcome: TrendOutcome, ids: Sequence[str], settings: TrendSettings
) -> list[str]:
    """Why a metric makes its profile a regression, with numbers rounded never across their
    thresholds (a confidence down, a p-value up). `ids`: the series' runs (capacity: sweeps)."""
    threshold, step_p = settings.confidence_threshold, settings.step_p
    what = "sweep" if metric is CAPACITY else "run"
    name = "capacity under SLO" if metric is CAPACITY else metric.name
    reasons = []
    if outcome.direction == "degrading" and outcome.relative_change is not None:
        shown = confidence_text(outcome.confidence, threshold)
        reasons.append(
            f"{name} degrading {outcome.relative_change:+.1%} over {len(ids)} {what}s "
            f"(confidence {shown})"
        )
    if outcome.change_point_direction == "degrading" and outcome.change_point is not None:
        step = outcome.step_relative_change or 0.0
        reasons.append(
            f"{name} stepped {step:+.1%} at {what} {ids[outcome.change_point]} "
            f"(p={p_value_text(outcome.change_point_p or 0.0, step_p)})"
        )
    return reasons


def _capacity(answers: pl.DataFrame) -> tuple[dict[str, Any], list[float], list[str]]:
    """The sweep columns of a profile row, and the capacity series (values, sweep ids) of the
    sweeps comparable with the latest one (same axis and SLO)."""
    judged = answers.filter(pl.col("slo").is_not_null()).sort("timestamp", "sweep_id")
    if judged.is_empty():
        columns = {"sweeps": answers.height, "latest_sweep_id": None, "latest_capacity": None}
        return columns | {"capacity_axis": None, "capacity_slo": None}, [], []
    latest = judged.row(-1, named=True)
    same = judged.filter((pl.col("axis") == latest["axis"]) & (pl.col("slo") == latest["slo"]))
    values = same["max_load_under_slo"].fill_null(0.0).to_list()
    columns = {
        "sweeps": answers.height,
        "latest_sweep_id": latest["sweep_id"],
        "latest_capacity": values[-1],
        "capacity_axis": latest["axis"],
        "capacity_slo": latest["slo"],
    }
    return columns, values, same["sweep_id"].to_list()


def _profile_group(
    runs: pl.DataFrame, answers: pl.DataFrame, settings: TrendSettings
) -> dict[str, Any]:
    ordinary = runs.filter(pl.col("sweep_id").is_null())
    series = ordinary if ordinary.height else runs  # a key swept and never run otherwise
    latest = series.row(-1, named=True)
    same = series.filter(
        (pl.col("concurrency") == latest["concurrency"]) & (pl.col("mode") == latest["mode"])
    )
    run_ids = same["run_id"].to_list()
    row: dict[str, Any] = {key: latest[key] for key in PROFILE_KEYS}
    row |= {
        "concurrency": latest["concurrency"],
        "mode": latest["mode"],
        "data_points": same.height,
        "runs_excluded": runs.height - same.height,
        "first_run_id": run_ids[0],
        "latest_run_id": latest["run_id"],
        "created_at": same["timestamp"][0],
        "updated_at": latest["timestamp"],
    }
    row |= {name: latest[column] for name, column in _LATEST}
    capacity_columns, capacity, sweep_ids = _capacity(answers)
    row |= capacity_columns
    confidences, reasons = [], []
    for metric in TRENDED:
        values, ids = (
            (capacity, sweep_ids)
            if metric is CAPACITY
            else (same[metric.column].to_list(), run_ids)
        )
        outcome = analyze_trend(values, higher_is_better=metric.higher_is_better, settings=settings)
        row |= _metric_columns(metric, outcome, ids)
        if outcome.direction != "insufficient_data" and metric is not CAPACITY:
            confidences.append(outcome.confidence)
        reasons += _reasons(metric, outcome, ids, settings)
    row["overall_confidence"] = sum(confidences) / len(confidences) if confidences else 0.0
    row["regression"] = bool(reasons)
    row["regression_reasons"] = "; ".join(reasons) or None
    return row


def profile(results: pl.LazyFrame, settings: TrendSettings) -> pl.DataFrame:
    """Trends per (provider, model, scenario, target) over runs ordered by start time, and of
    each key's sweep answers over its sweeps."""
    runs = (
        results.filter(pl.col("run_status").is_in(TRENDED_STATUSES))
        .with_columns(
            pl.when(pl.col("cost_usd") > 0)
            .then(pl.col("output_tokens") / pl.col("cost_usd"))
            .alias("cost_efficiency")
        )
        .sort([*PROFILE_KEYS, "timestamp", "run_id"])
        .collect()
    )
    answers = sweeps(runs)
    rows = []
    for group in runs.partition_by(list(PROFILE_KEYS), maintain_order=True):
        key = group.row(0, named=True)
        mine = answers.filter(
            *(pl.col(k) == key[k] for k in ("scenario", "target")),
            *(pl.col(k) == key[k] for k in ("provider", "model")),
        )
        rows.append(_profile_group(group, mine, settings))
    return (
        pl.DataFrame(rows, schema=PROFILE_SCHEMA, orient="row")
        if rows
        else PROFILE_SCHEMA.to_frame()
    )


def _trend(row: dict[str, Any], name: str) -> MetricTrend:
    return MetricTrend(
        direction=row[f"{name}_trend"],
        relative_change=row[f"{name}_relative_change"],
        confidence=row[f"{name}_confidence"],
    )


def to_performance_profile(row: dict[str, Any]) -> PerformanceProfile:
    """The seed's `PerformanceProfile` for one output row (the seed's `TrendMetrics` needs at
    least `MIN_TREND_POINTS` runs, whatever `[trends] min_points` says)."""
    trends = None
    if row["data_points"] >= MIN_TREND_POINTS:
        detail = TrendDetail(
            average_latency=_trend(row, "latency"),
            throughput=_trend(row, "throughput"),
            error_rate=_trend(row, "error_rate"),
            cost_efficiency=_trend(row, "cost_efficiency"),
        )
        trends = TrendMetrics(
            average_latency_trend=detail.average_latency.direction,
            throughput_trend=detail.throughput.direction,
            error_rate_trend=detail.error_rate.direction,
            cost_efficiency_trend=detail.cost_efficiency.direction,
            confidence_level=row["overall_confidence"],
            data_points=row["data_points"],
            detail=detail,
        )
    return PerformanceProfile(
        provider_name=row["provider"],
        model_name=row["model"],
        trend_analysis=trends,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        metadata={k: row[k] for k in ("scenario", "target", "latest_run_id", "regression_reasons")},
    )
