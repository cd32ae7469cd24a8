"""Everything the report reads, loaded once into one plain dataclass (the only I/O before writing).

Why a single load step: the chart and page builders stay pure functions of frames, so a test can
feed them frames directly and the same inputs always give the same page. Every input but the
results is optional: a missing one is recorded with the command that builds it, and the page shows
what it has instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from pipeline.errors import InputError, StageInputMissingError
from pipeline.store.backend import Store
from pipeline.store.eventlog import EventLog
from pipeline.store.layout import PROFILES, RECOMMENDATIONS, RESULTS
from pipeline.store.location import Location, open_store
from pipeline.store.outputs import read_output
from stages.aggregate.run import read_results

__all__ = [
    "INPUTS",
    "Missing",
    "ReportData",
    "latest_per_target",
    "load_report_data",
]

_KEYS = ["run_id", "scenario", "target"]


@dataclass(frozen=True)
class Missing:
    """An input that was not there: which one (`INPUTS`), which command builds it, and why."""

    input: str
    command: str
    message: str


INPUTS = ("requests", "profiles", "recommendations")
"""The optional inputs, by the name `Missing.input` gives them."""


@dataclass(frozen=True)
class ReportData:
    """The frames the report is drawn from, already narrowed to the chosen scenarios.

    `requests` holds the non-warmup attempts of each target's latest run per scenario (status,
    start, latency, ttft_us and chunk_offsets_us): the TTFT and ITL distributions (successful
    ones) and the over-time charts, binned at any width (results/timeseries.parquet is per second
    only, so a run of a few seconds would be a few steps).
    """

    results: pl.DataFrame
    profiles: pl.DataFrame | None = None
    recommendations: pl.DataFrame | None = None
    requests: pl.DataFrame | None = None
    missing: tuple[Missing, ...] = field(default_factory=tuple)


def latest_per_target(results: pl.DataFrame) -> pl.DataFrame:
    """The latest run (by start time, then run id) of each (scenario, target), sorted by both."""
    return (
        results.sort(["scenario", "target", "timestamp", "run_id"], nulls_last=True)
        .group_by(["scenario", "target"], maintain_order=True)
        .last()
    )


def _only(frame: pl.DataFrame, scenarios: Sequence[str] | None) -> pl.DataFrame:
    if scenarios is None or "scenario" not in frame.columns:
        return frame
    # A recommendation about no scenario in particular (null) applies to every selection.
    return frame.filter(pl.col("scenario").is_in(list(scenarios)) | pl.col("scenario").is_null())


def _optional(
    store: Store, key: str, producer: str, name: str, scenarios: Sequence[str] | None
) -> tuple[pl.DataFrame | None, Missing | None]:
    try:
        return _only(read_output(store, key, producer), scenarios), None
    except StageInputMissingError as exc:
        return None, Missing(name, f"pipeline {producer}", str(exc))


def _latest_requests(store: Store, latest: pl.DataFrame) -> pl.DataFrame:
    keys = latest.select(_KEYS)
    frame = (
        EventLog(store)
        .replay("requests", run_ids=sorted(set(keys["run_id"].to_list())))
        .frame.filter(~pl.col("warmup"))
        .select(*_KEYS, "status", "started_at", "latency_us", "ttft_us", "chunk_offsets_us")
        .join(keys.lazy(), on=_KEYS, how="semi")
    )
    return frame.collect().sort(_KEYS, maintain_order=True)


def load_report_data(data_dir: Location, scenarios: Sequence[str] | None = None) -> ReportData:
    """Read the outputs (and the latest runs' request events) under `data_dir`.

    Raises StageInputMissingError when there are no results at all (nothing to report), and
    InputError when a requested scenario has none.
    """
    store = open_store(data_dir)
    results = read_results(store)
    if results.is_empty():
        raise StageInputMissingError(
            f"{store.where(RESULTS)} holds no results: run `pipeline execute` and "
            "`pipeline aggregate` first"
        )
    if scenarios:
        unknown = sorted(set(scenarios) - set(results["scenario"].to_list()))
        if unknown:
            known = ", ".join(sorted(set(results["scenario"].to_list())))
            raise InputError(f"no results for scenario(s) {', '.join(unknown)}; known: {known}")
    results = _only(results, scenarios)
    missing: list[Missing] = []
    profiles, gap = _optional(store, PROFILES, "profile", "profiles", scenarios)
    recs, gap2 = _optional(store, RECOMMENDATIONS, "recommend", "recommendations", scenarios)
    missing += [g for g in (gap, gap2) if g is not None]
    requests: pl.DataFrame | None = _latest_requests(store, latest_per_target(results))
    if requests is not None and requests.is_empty():
        requests = None
        missing.append(
            Missing(
                "requests",
                "pipeline execute",
                f"no request events for the latest runs under {store.where('events')}",
            )
        )
    return ReportData(results, profiles, recs, requests, tuple(missing))
