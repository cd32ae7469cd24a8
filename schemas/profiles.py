"""The seed's trend entities: how a (provider, model, scenario, target) behaves across runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from schemas._base import Frozen
from schemas._types import UtcDatetime
from schemas.registry import ProviderName
from schemas.results import BenchmarkResult

__all__ = [
    "MIN_TREND_POINTS",
    "MetricTrend",
    "PerformanceProfile",
    "TrendDetail",
    "TrendDirection",
    "TrendMetrics",
]

MIN_TREND_POINTS = 3
TrendDirection = Literal["improving", "degrading", "stable", "insufficient_data"]


class MetricTrend(Frozen):
    """One metric's trend: direction, relative change over the window, one-sided confidence."""

    direction: TrendDirection
    relative_change: float | None = Field(default=None, allow_inf_nan=False)
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class TrendDetail(Frozen):
    """Beside the seed's directions: each metric's relative change and confidence."""

    average_latency: MetricTrend
    throughput: MetricTrend
    error_rate: MetricTrend
    cost_efficiency: MetricTrend


class TrendMetrics(Frozen):
    """The seed's trend analysis: a direction per metric, and how sure it is overall."""

    average_latency_trend: TrendDirection
    throughput_trend: TrendDirection
    error_rate_trend: TrendDirection
    cost_efficiency_trend: TrendDirection
    confidence_level: float = Field(ge=0.0, le=1.0)
    data_points: int = Field(ge=MIN_TREND_POINTS)
    change_point: int | None = Field(default=None, ge=0)
    """Index (in run order) of the first run after a detected step, if any."""
    detail: TrendDetail | None = None
    """Each metric's relative change and confidence (our addition: the seed has only the
    directions); when given, its directions must be the ones above."""

    @model_validator(mode="after")
    def _same_directions(self) -> TrendMetrics:
        if self.detail is not None:
            for name in ("average_latency", "throughput", "error_rate", "cost_efficiency"):
                if getattr(self.detail, name).direction != getattr(self, f"{name}_trend"):
                    raise ValueError(f"detail.{name}.direction differs from {name}_trend")
        return self


class PerformanceProfile(Frozen):
    provider_name: ProviderName
    model_name: str = Field(min_length=1)
    benchmark_results: list[BenchmarkResult] = Field(default_factory=list)
    trend_analysis: TrendMetrics | None = None
    optimization_recommendations: list[str] = Field(default_factory=list)
    created_at: UtcDatetime
    updated_at: UtcDatetime
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _times(self) -> PerformanceProfile:
        if self.updated_at < self.created_at:
            raise ValueError("updated_at must not be before created_at")
        if self.trend_analysis is not None and self.benchmark_results:
            if self.trend_analysis.data_points > len(self.benchmark_results):
                raise ValueError("trend_analysis.data_points exceeds the benchmark_results given")
        return self
