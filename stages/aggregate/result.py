"""A result row as the seed's `BenchmarkResult`, so every row is checked by the same rules.

The Parquet row is flat (one column per metric, for DuckDB and dashboards); the seed's entity is
nested (`TokenUsage`, `LatencyMetrics`, `MemoryUsage`). Fields the seed has no place for go into
`additional_metrics`, so nothing of the row is lost in the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from schemas import BenchmarkResult, LatencyMetrics, MemoryUsage, TokenUsage

__all__ = ["to_benchmark_result"]

_MAPPED = {
    "test_name",
    "provider",
    "model",
    "duration_s",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_usd",
    "efficiency_ratio",
    "throughput_rps",
    "error_rate",
    "peak_memory_bytes",
    "mean_memory_bytes",
    "timestamp",
}
_LATENCY = {
    "p50": "latency_p50_ms",
    "p95": "latency_p95_ms",
    "p99": "latency_p99_ms",
    "mean": "latency_mean_ms",
    "min": "latency_min_ms",
    "max": "latency_max_ms",
    "standard_deviation": "latency_std_ms",
    "p90": "latency_p90_ms",
    "p999": "latency_p999_ms",
}


def _elapsed(ms: float | None, floor_us: int = 1) -> timedelta | None:
    """A millisecond column as a duration, at least `floor_us` (the clock's 1 µs resolution: a
    latency measured as 0 still took something)."""
    if ms is None:
        return None
    return timedelta(microseconds=max(floor_us, round(ms * 1000)))


def to_benchmark_result(row: Mapping[str, Any]) -> BenchmarkResult:
    """Validate one `benchmark_results` row as a `schemas.BenchmarkResult` (raises if it breaks a rule).

    The duration is at least 1 µs (the clock's resolution): a single attempt that failed instantly
    still measured something. Throughput is 0 when the duration is 0 (the row holds null).
    Latencies become durations rounded to the microsecond (the events' own resolution).
    """
    latency = None
    if row["latency_p50_ms"] is not None:
        latency = LatencyMetrics(
            **{
                field: _elapsed(row[column], 0 if field == "standard_deviation" else 1)
                for field, column in _LATENCY.items()
            }
        )
    memory = None
    if row["peak_memory_bytes"] is not None:
        memory = MemoryUsage(
            peak_bytes=row["peak_memory_bytes"], average_bytes=row["mean_memory_bytes"]
        )
    extra = {k: v for k, v in row.items() if k not in _MAPPED and not k.startswith("latency_")}
    return BenchmarkResult(
        test_name=row["test_name"],
        provider_name=row["provider"],
        model_name=row["model"],
        duration=timedelta(microseconds=max(1, round(row["duration_s"] * 1_000_000))),
        tokens_used=TokenUsage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            total_tokens=row["total_tokens"],
            cached_tokens=row["cached_tokens"],
            cost_usd=row["cost_usd"],
            efficiency_ratio=row["efficiency_ratio"],
        ),
        latency_percentiles=latency,
        throughput_rps=row["throughput_rps"] or 0.0,
        error_rate=row["error_rate"],
        memory_usage=memory.peak_bytes if memory is not None else None,
        memory=memory,
        timestamp=row["timestamp"],
        additional_metrics=extra,
    )
