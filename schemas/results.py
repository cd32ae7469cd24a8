"""The seed's result entities: what one benchmark (run × scenario × target) measured.

Frozen: a result is immutable once created. As in the seed, every duration is a
`datetime.timedelta` (the seed's `time.Duration`), latencies included; the Parquet columns keep
them as millisecond floats (`latency_p50_ms`, ...), and `stages.aggregate.result` maps one to
the other. Instants are UTC.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from schemas._base import Frozen
from schemas._types import Elapsed, NonNegativeElapsed, UtcDatetime
from schemas.registry import ProviderName

__all__ = ["BenchmarkResult", "LatencyMetrics", "MemoryUsage", "TokenUsage"]

NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class TokenUsage(Frozen):
    """Tokens of a result and what they cost. `cost_usd` is None when the price is unknown."""

    input_tokens: NonNegInt = 0
    output_tokens: NonNegInt = 0
    total_tokens: NonNegInt = 0
    cached_tokens: NonNegInt = 0
    cost_usd: NonNegFloat | None = None
    efficiency_ratio: NonNegFloat | None = None

    @model_validator(mode="after")
    def _totals(self) -> TokenUsage:
        if self.total_tokens != self.input_tokens + self.output_tokens:
            raise ValueError(
                f"total_tokens ({self.total_tokens}) must equal input_tokens + output_tokens "
                f"({self.input_tokens} + {self.output_tokens})"
            )
        if self.cached_tokens > self.input_tokens:
            raise ValueError("cached_tokens must not exceed input_tokens")
        return self


class LatencyMetrics(Frozen):
    """Latency distribution over the successful requests of a result, as durations.

    The seed's rule: all duration values must be positive. The one exception is the standard
    deviation, which is 0 for a single request (or identical ones): a spread, not a latency."""

    p50: Elapsed
    p95: Elapsed
    p99: Elapsed
    mean: Elapsed
    min: Elapsed
    max: Elapsed
    standard_deviation: NonNegativeElapsed
    p90: Elapsed | None = None
    p999: Elapsed | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LatencyMetrics:
        # Exact comparisons: producers clamp float rounding (a mean one ulp below min) themselves.
        if not self.min <= self.mean <= self.max:
            raise ValueError(f"need min <= mean <= max, got {self.min}, {self.mean}, {self.max}")
        chain = [("min", self.min), ("p50", self.p50)]
        if self.p90 is not None:
            chain.append(("p90", self.p90))
        chain += [("p95", self.p95), ("p99", self.p99)]
        if self.p999 is not None:
            chain.append(("p999", self.p999))
        chain.append(("max", self.max))
        for (lo_name, lo), (hi_name, hi) in zip(chain, chain[1:], strict=False):
            if lo > hi:
                raise ValueError(f"need {lo_name} <= {hi_name}, got {lo} > {hi}")
        return self


class MemoryUsage(Frozen):
    """Client memory sampled during the run, in bytes."""

    peak_bytes: NonNegInt
    average_bytes: NonNegInt | None = None

    @model_validator(mode="after")
    def _peak(self) -> MemoryUsage:
        if self.average_bytes is not None and self.average_bytes > self.peak_bytes:
            raise ValueError("average_bytes must not exceed peak_bytes")
        return self


class BenchmarkResult(Frozen):
    """One benchmark's outcome. `additional_metrics` carries anything beyond the seed's fields."""

    test_name: str = Field(min_length=1)
    provider_name: ProviderName
    model_name: str = Field(min_length=1)
    duration: Elapsed
    tokens_used: TokenUsage
    latency_percentiles: LatencyMetrics | None = None
    throughput_rps: NonNegFloat
    error_rate: Rate
    memory_usage: NonNegInt | None = None
    """The client's peak memory in bytes (the seed's int64)."""
    memory: MemoryUsage | None = None
    """The richer summary of the same samples (peak and mean), beside the seed's field."""
    timestamp: UtcDatetime
    additional_metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("test_name", "model_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkResult:
        if self.error_rate < 1.0 and self.latency_percentiles is None and self.throughput_rps > 0:
            raise ValueError("latency_percentiles is required when any request succeeded")
        if self.memory is not None and self.memory.peak_bytes != self.memory_usage:
            raise ValueError("memory.peak_bytes must equal memory_usage (the same peak)")
        return self
