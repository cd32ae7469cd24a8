"""Benchmark-result rows with the real output schema, for testing the stages that read results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.store.layout import RESULTS, Layout
from pipeline.store.location import open_store
from pipeline.store.outputs import write_output
from stages.aggregate.transform import RESULT_SCHEMA

BASE_TIME = datetime(2026, 10, 1, tzinfo=UTC)


def result_row(index: int = 0, **overrides: Any) -> dict[str, Any]:
    """A plausible healthy result (run `index` of a daily history); override what a test is about."""
    row: dict[str, Any] = {name: None for name in RESULT_SCHEMA.names()}
    ops = overrides.get("operations", 100)
    row |= {
        "run_id": f"run-{index:03d}",
        "scenario": "chat",
        "target": "alpha",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "run_status": "completed",
        "mode": "closed",
        "concurrency": 4,
        "planned_requests": ops,
        "timestamp": BASE_TIME + timedelta(days=index),
        "duration_s": 10.0,
        "operations": ops,
        "successful": ops,
        "failed": 0,
        "retries": 0,
        "error_rate": 0.0,
        "throughput_rps": 10.0,
        "output_tokens_per_s": 400.0,
        "latency_p50_ms": 400.0,
        "latency_p90_ms": 480.0,
        "latency_p95_ms": 500.0,
        "latency_p99_ms": 600.0,
        "latency_p999_ms": 650.0,
        "latency_mean_ms": 420.0,
        "latency_min_ms": 300.0,
        "latency_max_ms": 700.0,
        "latency_std_ms": 60.0,
        "ttft_p50_ms": 80.0,
        "ttft_p95_ms": 120.0,
        "ttft_p99_ms": 150.0,
        "ttft_mean_ms": 85.0,
        "itl_p50_ms": 8.0,
        "itl_p95_ms": 12.0,
        "itl_p99_ms": 15.0,
        "itl_mean_ms": 8.5,
        "tpot_mean_ms": 8.5,
        "input_tokens": 30 * ops,
        "output_tokens": 40 * ops,
        "total_tokens": 70 * ops,
        "cached_tokens": 0,
        "efficiency_ratio": 40 / 30,
        "price_input_per_mtok": 0.15,
        "price_output_per_mtok": 0.60,
        "price_cached_input_per_mtok": 0.075,
        "peak_memory_bytes": 100 << 20,
        "mean_memory_bytes": 90 << 20,
    }
    for name in RESULT_SCHEMA.names():
        if name.startswith("error_") and name != "error_rate":
            row[name] = 0
    row |= overrides
    row["test_name"] = f"{row['scenario']}@{row['target']}"
    row["total_tokens"] = row["input_tokens"] + row["output_tokens"]
    if "cost_usd" not in overrides:
        row["cost_input_usd"] = (
            row["input_tokens"] * row["price_input_per_mtok"] / 1e6
            if row["price_input_per_mtok"] is not None
            else None
        )
        row["cost_output_usd"] = (
            row["output_tokens"] * row["price_output_per_mtok"] / 1e6
            if row["price_output_per_mtok"] is not None
            else None
        )
        parts = (row["cost_input_usd"], row["cost_output_usd"])
        row["cost_usd"] = None if None in parts else sum(parts)
    if row["cost_usd"] is not None and "cost_per_request_usd" not in overrides:
        row["cost_per_request_usd"] = row["cost_usd"] / max(row["successful"], 1)
    return row


def results_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RESULT_SCHEMA, orient="row")


def write_results(data_dir: Path, rows: list[dict[str, Any]]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)  # a stage writes only into a data dir that exists
    write_output(
        open_store(data_dir), results_frame(rows), RESULTS, ["run_id", "scenario", "target"]
    )
    return Layout(data_dir).results


def earlier_runs(
    results: pl.DataFrame, count: int, every: timedelta = timedelta(hours=1), seed: int = 7
) -> pl.DataFrame:
    """`count` runs of each (scenario, target) of `results` before its first one, `every` apart.

    For a long history without writing its events (a year of hourly runs would take longer to
    write than to report): copies of the real rows in turn, with their own run ids (sortable by
    start, like `execute`'s) and start times, latency 10% lower at the start of the history,
    drifting up, with 5% noise per run (throughput the inverse)."""
    rng = np.random.default_rng(seed)
    latency = [
        c for c in results.columns if c.startswith(("latency_", "ttft_")) and c.endswith("_ms")
    ]
    parts = []
    groups = results.sort("timestamp").partition_by(["scenario", "target"], as_dict=True)
    for (scenario, target), rows in sorted(groups.items()):
        first = rows["timestamp"][0]
        back = np.arange(count, 0, -1)
        starts = [first - every * int(k) for k in back]
        factor = 1.0 - 0.1 * back / count + rng.normal(0.0, 0.05, count)
        parts.append(
            rows[np.arange(count) % rows.height].with_columns(
                pl.Series("run_id", [f"{at:%Y%m%dT%H%M%SZ}-{scenario}-{target}" for at in starts]),
                pl.Series("timestamp", starts, dtype=results.schema["timestamp"]),
                *(pl.col(c) * factor for c in latency),
                pl.col("throughput_rps") / factor,
            )
        )
    return pl.concat(parts)
