"""Declarations only: the entities, events, config and stored-table schemas. No I/O, no imports of ours."""

from schemas._types import Duration, NonNegativeDuration, SafeName, check_safe_name, parse_duration
from schemas.config import CompareWeights, ModelPrice, PipelineConfig, TargetConfig, TrendSettings
from schemas.events import (
    ERROR_TYPES,
    RUN_STATUSES,
    SCHEMA_VERSION,
    TABLES,
    RequestEvent,
    ResourceSample,
    RunEvent,
    TableSpec,
    event_id,
)
from schemas.profiles import MIN_TREND_POINTS, MetricTrend, PerformanceProfile, TrendMetrics
from schemas.recommend import RecommendSettings as RecommendSettings
from schemas.registry import (
    ProviderKind,
    get_provider,
    register_provider,
    registered_providers,
    unregister_provider,
)
from schemas.results import BenchmarkResult, LatencyMetrics, MemoryUsage, TokenUsage
from schemas.scenario import (
    ERROR_KINDS,
    BenchmarkScenario,
    MockConfiguration,
    ScenarioSet,
    add_scenario_validator,
)

__all__ = [
    "ERROR_KINDS",
    "ERROR_TYPES",
    "MIN_TREND_POINTS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TABLES",
    "BenchmarkResult",
    "BenchmarkScenario",
    "CompareWeights",
    "Duration",
    "LatencyMetrics",
    "MemoryUsage",
    "MetricTrend",
    "MockConfiguration",
    "ModelPrice",
    "NonNegativeDuration",
    "PerformanceProfile",
    "PipelineConfig",
    "ProviderKind",
    "RequestEvent",
    "ResourceSample",
    "RunEvent",
    "SafeName",
    "ScenarioSet",
    "TableSpec",
    "TargetConfig",
    "TokenUsage",
    "TrendMetrics",
    "TrendSettings",
    "add_scenario_validator",
    "check_safe_name",
    "event_id",
    "get_provider",
    "parse_duration",
    "register_provider",
    "registered_providers",
    "unregister_provider",
]
