"""End to end: `pipeline execute` against the mock with injected errors, then `pipeline aggregate`;
every count in the results matches the events that execute wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl

from pipeline.store.eventlog import EventLog
from pipeline.store.layout import Layout
from schemas import ERROR_TYPES
from stages.aggregate import to_benchmark_result
from tests.conftest import CliResult

CONFIG = """
[[targets]]
name = "flaky"
provider = "mock"
model = "mock-small"
mock = { simulated_latency = "3ms", token_generation_rate = 4000, error_injection_rate = 0.3, seed = 7 }

[[targets]]
name = "steady"
provider = "mock"
model = "mock-unpriced"
mock = { simulated_latency = "3ms", token_generation_rate = 4000, error_injection_rate = 0.0, seed = 8 }
"""


def test_execute_then_aggregate_counts_match_events(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    (tmp_path / "pipeline.toml").write_text(CONFIG)
    data = tmp_path / "data"
    ran = cli(
        "--data-dir", str(data), "execute", "--requests", "40", "--concurrency", "4", "--seed", "5"
    )
    assert ran.code == 0, ran.err
    built = cli("--data-dir", str(data), "aggregate", "--json")
    assert built.code == 0, built.err
    assert json.loads(built.out)["unpriced_models"] == ["mock-unpriced"]

    events = EventLog(data).replay("requests").collect().filter(~pl.col("warmup"))
    results_path, series_path = (Layout(data).results, Layout(data).timeseries)
    results = pl.read_parquet(results_path)
    series = pl.read_parquet(series_path)
    assert results.height == events.select("run_id", "scenario", "target").n_unique() == 2
    for row in results.iter_rows(named=True):
        mine = events.filter(
            (pl.col("run_id") == row["run_id"])
            & (pl.col("scenario") == row["scenario"])
            & (pl.col("target") == row["target"])
        )
        ok = mine.filter(pl.col("status") == "ok")
        assert row["operations"] == mine.height
        assert row["successful"] == ok.height
        assert row["failed"] == mine.height - ok.height
        for kind in ERROR_TYPES:
            assert row[f"error_{kind}"] == mine.filter(pl.col("error_type") == kind).height
        assert row["output_tokens"] == mine["output_tokens"].sum()
        assert row["run_status"] == "completed"
        ts = series.filter(pl.col("run_id") == row["run_id"], pl.col("target") == row["target"])
        assert ts["started"].sum() == row["operations"]
        assert ts["completed"].sum() == row["successful"]
        assert ts["errors"].sum() == row["failed"]
        to_benchmark_result(row)
    flaky = results.filter(pl.col("target") == "flaky").row(0, named=True)
    steady = results.filter(pl.col("target") == "steady").row(0, named=True)
    assert flaky["failed"] > 0 and flaky["cost_usd"] > 0
    assert steady["failed"] == 0 and steady["cost_usd"] is None
