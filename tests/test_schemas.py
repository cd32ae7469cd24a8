"""Each validation rule of the seed accepts exactly the valid values, with a message naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.config import format_validation_error
from schemas import (
    MAX_PLANNED_REQUESTS,
    TABLES,
    BenchmarkResult,
    BenchmarkScenario,
    CompareWeights,
    LatencyMetrics,
    MetricTrend,
    MockConfiguration,
    ModelPrice,
    PerformanceProfile,
    ProviderKind,
    RequestEvent,
    ResourceSample,
    RunEvent,
    ScenarioSet,
    TargetConfig,
    TokenUsage,
    TrendDetail,
    TrendMetrics,
    TrendSettings,
    add_scenario_validator,
    parse_duration,
    register_provider,
    unregister_provider,
)
from tests.strategies import request_events, resource_samples, run_events, to_batch

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def fields_in_error(exc: ValidationError) -> str:
    return format_validation_error("f", exc)


def scenario(**overrides: Any) -> BenchmarkScenario:
    base: dict[str, Any] = {"name": "s", "test_prompts": ["hi"]}
    return BenchmarkScenario(**{**base, **overrides})


def result(**overrides: Any) -> BenchmarkResult:
    base: dict[str, Any] = {
        "test_name": "t",
        "provider_name": "mock",
        "model_name": "m",
        "duration": timedelta(seconds=2),
        "tokens_used": TokenUsage(input_tokens=1, output_tokens=2, total_tokens=3),
        "latency_percentiles": LatencyMetrics(
            p50=timedelta(milliseconds=2),
            p95=timedelta(milliseconds=3),
            p99=timedelta(milliseconds=4),
            mean=timedelta(milliseconds=2.5),
            min=timedelta(milliseconds=1),
            max=timedelta(milliseconds=5),
            standard_deviation=timedelta(milliseconds=1),
        ),
        "throughput_rps": 10.0,
        "error_rate": 0.0,
        "timestamp": NOW,
    }
    return BenchmarkResult(**{**base, **overrides})


counts = st.integers(min_value=-5, max_value=10**6)


@given(counts, counts, counts)
def test_token_usage_accepts_exactly_consistent_non_negative_totals(i: int, o: int, t: int) -> None:
    valid = i >= 0 and o >= 0 and t >= 0 and t == i + o
    if valid:
        assert TokenUsage(input_tokens=i, output_tokens=o, total_tokens=t).total_tokens == t
    else:
        with pytest.raises(ValidationError):
            TokenUsage(input_tokens=i, output_tokens=o, total_tokens=t)


def test_token_usage_message_names_the_fields() -> None:
    with pytest.raises(ValidationError) as info:
        TokenUsage(input_tokens=1, output_tokens=2, total_tokens=4)
    assert "total_tokens (4) must equal input_tokens + output_tokens" in fields_in_error(info.value)


latencies = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(st.lists(latencies, min_size=7, max_size=7))
def test_latency_metrics_accept_exactly_ordered_values(v: list[float]) -> None:
    p50, p95, p99, mean, lo, hi, std = (timedelta(milliseconds=x) for x in v)
    valid = lo <= p50 <= p95 <= p99 <= hi and lo <= mean <= hi and lo > timedelta(0)
    valid = valid and std >= timedelta(0)
    kwargs = dict(p50=p50, p95=p95, p99=p99, mean=mean, min=lo, max=hi, standard_deviation=std)
    if valid:
        LatencyMetrics(**kwargs)
    else:
        with pytest.raises(ValidationError):
            LatencyMetrics(**kwargs)


@given(st.floats(min_value=-1, max_value=2, allow_nan=False))
def test_rates_must_lie_in_zero_to_one(rate: float) -> None:
    if 0 <= rate <= 1:
        assert MockConfiguration(error_injection_rate=rate, response_variability=rate)
        assert result(error_rate=rate).error_rate == rate
    else:
        with pytest.raises(ValidationError, match="error_injection_rate"):
            MockConfiguration(error_injection_rate=rate)
        with pytest.raises(ValidationError, match="response_variability"):
            MockConfiguration(response_variability=rate)
        with pytest.raises(ValidationError, match="error_rate"):
            result(error_rate=rate)


@given(st.integers(min_value=-3, max_value=150))
def test_concurrency_level_is_one_to_one_hundred(level: int) -> None:
    if 1 <= level <= 100:
        assert scenario(concurrency_level=level).concurrency_level == level
    else:
        with pytest.raises(ValidationError, match="concurrency_level"):
            scenario(concurrency_level=level)


@given(st.integers(min_value=-3, max_value=3))
def test_counts_are_non_negative_and_operations_positive(n: int) -> None:
    if n >= 1:
        scenario(expected_operations=n)
    else:
        with pytest.raises(ValidationError, match="expected_operations"):
            scenario(expected_operations=n)
    if n >= 1:  # the seed's rule: positive (None, the default, is no simulated memory)
        MockConfiguration(memory_usage_simulation=n)
    else:
        with pytest.raises(ValidationError, match="memory_usage_simulation"):
            MockConfiguration(memory_usage_simulation=n)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        (3, 3.0),
        (0.25, 0.25),
        ("250us", 0.00025),
        ("1d", 86400.0),
    ],
)
def test_durations_accept_seconds_or_units(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["0s", 0, -1, "fast", "5 parsecs", True])
def test_timeouts_must_be_positive_durations(bad: object) -> None:
    with pytest.raises(ValidationError, match="timeout_duration"):
        scenario(timeout_duration=bad)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "bad", [INF, -INF, NAN, 1e400, 10**400, 1e15, "1e400s", "1e300h", "inf", "nan", "99999999999h"]
)
def test_a_duration_a_timedelta_cannot_hold_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(bad)
    assert not isinstance(caught.value, OverflowError)
    with pytest.raises(ValidationError, match="timeout_duration"):
        scenario(timeout_duration=bad)


@pytest.mark.parametrize(
    ("field", "model"),
    [
        ("timeout_duration", "scenario"),
        ("duration", "scenario"),
        ("ramp_up", "scenario"),
        ("simulated_latency", "mock"),
        ("hang", "mock"),
        ("retry_after", "mock"),
        ("request_timeout", "target"),
    ],
)
def test_durations_are_at_most_seven_days(field: str, model: str) -> None:
    def build(value: object) -> object:
        if model == "scenario":
            return scenario(**{field: value})
        if model == "mock":
            return MockConfiguration.model_validate({field: value})
        return TargetConfig.model_validate(
            {"name": "t", "provider": "mock", "model": "m", field: value}
        )

    assert build("7d") is not None and build(7 * 86400) is not None
    with pytest.raises(ValidationError, match=rf"{field}\n.*at most 7 days"):
        build(7 * 86400 + 1)


@pytest.mark.parametrize(
    ("model", "field", "bad"),
    [
        (MockConfiguration, "token_generation_rate", INF),
        (MockConfiguration, "token_generation_rate", 1e-6),
        (MockConfiguration, "token_generation_rate", 1e7),
        (MockConfiguration, "error_injection_rate", NAN),
        (MockConfiguration, "response_variability", NAN),
        (MockConfiguration, "memory_usage_simulation", 2**30 + 1),
        (MockConfiguration, "concurrency_limit", 10_001),
        (MockConfiguration, "output_tokens", 100_001),
        (ModelPrice, "input", INF),
        (ModelPrice, "output", NAN),
        (ModelPrice, "cached_input", 1e7),
        (TrendSettings, "min_change", INF),
        (TrendSettings, "confidence_threshold", NAN),
        (TrendSettings, "step_p", NAN),
        (TrendSettings, "min_points", 10**6),
        (TrendSettings, "min_segment", 2**64),
        (CompareWeights, "latency", INF),
        (CompareWeights, "cost", NAN),
        (CompareWeights, "reliability", 1001),
    ],
)
def test_numbers_are_finite_and_bounded(model: Any, field: str, bad: object) -> None:
    base = {"input": 1, "output": 1} if model is ModelPrice else {}
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**base, field: bad})
    assert fields_in_error(caught.value).startswith(f"f: {field}: ")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rate": INF}, "rate"),
        ({"rate": 1e7}, "rate"),
        ({"warmup": 1_000_001}, "warmup"),
        ({"rate": 1000, "duration": "3h"}, "duration"),  # 10.8M arrivals
        ({"rate": 100, "duration": 100_000, "warmup": 1}, "duration"),
        ({"expected_operations": MAX_PLANNED_REQUESTS, "warmup": 1}, "warmup"),
    ],
)
def test_what_a_run_plans_is_bounded(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        scenario(**overrides)
    assert fields_in_error(caught.value).startswith(f"f: {field}: ")


def test_a_plan_at_the_limit_is_accepted() -> None:
    assert scenario(rate=100, duration=100_000).duration == timedelta(seconds=100_000)
    assert scenario(expected_operations=MAX_PLANNED_REQUESTS - 5, warmup=5).warmup == 5


def test_the_mock_holds_at_most_4_gib_at_once() -> None:
    assert MockConfiguration(memory_usage_simulation=2**30, concurrency_limit=4)
    with pytest.raises(ValidationError) as caught:
        MockConfiguration(memory_usage_simulation=2**30, concurrency_limit=5)
    message = fields_in_error(caught.value)
    assert message.startswith("f: memory_usage_simulation: ") and "concurrency_limit" in message
    # Inside a config, the error keeps the path to the field.
    with pytest.raises(ValidationError) as caught:
        TargetConfig(name="t", provider="mock", model="m", mock={"memory_usage_simulation": 2**30})
    assert fields_in_error(caught.value).startswith("f: mock.memory_usage_simulation: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "ok\n"),
        ("base_url", "https://x.example\n"),
        ("api_key_env", "KEY\n"),
        ("headers", {"x bad": "v"}),
        ("headers", {"x-ok": "a\r\nx-injected: 1"}),
    ],
)
def test_a_target_refuses_line_breaks_and_bad_header_names(field: str, value: object) -> None:
    fields: dict[str, Any] = {"name": "t", "provider": "openai", "model": "m", field: value}
    with pytest.raises(ValidationError) as caught:
        TargetConfig.model_validate(fields)
    assert fields_in_error(caught.value).startswith(f"f: {field}: ")


def test_zero_latency_is_allowed_for_the_mock() -> None:
    assert MockConfiguration(simulated_latency=0).simulated_latency == timedelta(0)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 200, "sp ace"])
def test_names_that_become_paths_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        scenario(name=name)
    with pytest.raises(ValidationError, match="name"):
        TargetConfig(name=name, provider="mock", model="m")


def test_a_scenario_needs_a_prompt() -> None:
    with pytest.raises(ValidationError, match="at least one prompt"):
        scenario(test_prompts=[])
    with pytest.raises(ValidationError, match="test_prompts"):
        scenario(test_prompts=[""])


def test_scenario_names_are_unique_within_a_set() -> None:
    with pytest.raises(ValidationError, match="scenario names must be unique; repeated: a"):
        ScenarioSet(scenarios=[scenario(name="a"), scenario(name="a")])
    assert len(ScenarioSet(scenarios=[scenario(name="a"), scenario(name="b")]).scenarios) == 2


def test_results_are_frozen_and_carry_additional_metrics() -> None:
    item = result(additional_metrics={"ttft_p50_ms": 12.5})
    with pytest.raises(ValidationError):
        item.error_rate = 0.5  # type: ignore[misc]
    assert item.additional_metrics["ttft_p50_ms"] == 12.5


def test_blank_names_and_unknown_providers_are_refused() -> None:
    with pytest.raises(ValidationError, match="test_name"):
        result(test_name="  ")
    with pytest.raises(ValidationError, match="unknown provider 'nope'"):
        result(provider_name="nope")


def test_profile_times_and_trend_rules() -> None:
    trend = MetricTrend(direction="stable", relative_change=0.0, confidence=0.5)
    metrics: dict[str, Any] = dict(
        average_latency_trend="stable",
        throughput_trend="stable",
        error_rate_trend="stable",
        cost_efficiency_trend="stable",
    )
    TrendMetrics(**metrics, confidence_level=0.9, data_points=3)
    detail = TrendDetail(
        average_latency=trend, throughput=trend, error_rate=trend, cost_efficiency=trend
    )
    TrendMetrics(**metrics, confidence_level=0.9, data_points=3, detail=detail)
    with pytest.raises(ValidationError, match="detail.throughput.direction differs"):
        TrendMetrics(
            **{**metrics, "throughput_trend": "degrading"},
            confidence_level=0.9,
            data_points=3,
            detail=detail,
        )
    with pytest.raises(ValidationError, match="average_latency_trend"):
        TrendMetrics(
            **{**metrics, "average_latency_trend": "sideways"}, confidence_level=0.9, data_points=3
        )
    with pytest.raises(ValidationError, match="data_points"):
        TrendMetrics(**metrics, confidence_level=0.9, data_points=2)
    with pytest.raises(ValidationError, match="confidence_level"):
        TrendMetrics(**metrics, confidence_level=1.5, data_points=3)
    with pytest.raises(ValidationError, match="confidence"):
        MetricTrend(direction="stable", confidence=-0.1)
    with pytest.raises(ValidationError, match="updated_at must not be before created_at"):
        PerformanceProfile(
            provider_name="mock",
            model_name="m",
            created_at=NOW,
            updated_at=NOW - timedelta(seconds=1),
        )
    profile = PerformanceProfile(
        provider_name="mock", model_name="m", created_at=NOW, updated_at=NOW, metadata={"k": 1}
    )
    assert profile.metadata == {"k": 1}


def test_a_new_provider_kind_is_added_through_the_registry_alone() -> None:
    with pytest.raises(ValidationError, match="unknown provider 'fake'"):
        TargetConfig(name="f", provider="fake", model="m")
    register_provider(ProviderKind("fake", streaming=False, tools=False))
    try:
        assert TargetConfig(name="f", provider="fake", model="m").provider == "fake"
        assert result(provider_name="fake").provider_name == "fake"
    finally:
        unregister_provider("fake")


def test_custom_scenario_validation_hook() -> None:
    def no_long_runs(s: BenchmarkScenario) -> None:
        if s.expected_operations > 1000:
            raise ValueError("expected_operations: our quota allows at most 1000 requests")

    remove = add_scenario_validator(no_long_runs)
    try:
        with pytest.raises(ValidationError, match="at most 1000"):
            scenario(expected_operations=5000)
        scenario(expected_operations=10)
    finally:
        remove()
    scenario(expected_operations=5000)


def test_keys_never_go_in_a_target() -> None:
    with pytest.raises(ValidationError, match="api_key_env") as info:
        TargetConfig.model_validate(
            {"name": "x", "provider": "openai", "model": "m", "api_key": "sk-secret"}
        )
    assert "sk-secret" not in fields_in_error(info.value)


def test_openai_compatible_needs_a_base_url() -> None:
    with pytest.raises(ValidationError, match="needs base_url"):
        TargetConfig(name="x", provider="openai-compatible", model="m")


@pytest.mark.parametrize(
    ("table", "strategy"),
    [("requests", request_events()), ("runs", run_events()), ("samples", resource_samples())],
)
def test_event_model_to_arrow_and_back_is_lossless(
    table: str, strategy: st.SearchStrategy[Any]
) -> None:
    model = TABLES[table].model

    @given(st.lists(strategy, min_size=1, max_size=5))
    def round_trip(events: list[Any]) -> None:
        batch = to_batch(table, events)
        assert batch.schema.equals(TABLES[table].schema)
        back = [model.model_validate(row) for row in batch.to_pylist()]
        assert back == events

    round_trip()


def test_the_arrow_schema_is_derived_from_the_model() -> None:
    for spec, model in (
        ("requests", RequestEvent),
        ("runs", RunEvent),
        ("samples", ResourceSample),
    ):
        schema = TABLES[spec].schema
        assert schema.names == list(model.model_fields)
        for name, info in model.model_fields.items():
            nullable = schema.field(name).nullable
            assert nullable == (type(None) in getattr(info.annotation, "__args__", ())), name


def test_the_seeds_shapes_as_written() -> None:
    """The seed's entities take the seed's types: latencies are durations (all positive), a
    trend is a direction, memory usage is the peak in bytes, the mock's memory is positive."""
    ms = [timedelta(milliseconds=x) for x in (10, 20, 30, 15, 5, 40)]
    latency = LatencyMetrics(
        p50=ms[0],
        p95=ms[1],
        p99=ms[2],
        mean=ms[3],
        min=ms[4],
        max=ms[5],
        standard_deviation=timedelta(0),
    )
    assert latency.p50 == timedelta(milliseconds=10) and latency.standard_deviation == timedelta(0)
    for bad in (timedelta(0), timedelta(milliseconds=-1)):
        with pytest.raises(ValidationError, match="min"):
            LatencyMetrics(**{**latency.model_dump(), "min": bad})
    trends = TrendMetrics(
        average_latency_trend="stable",
        throughput_trend="improving",
        error_rate_trend="degrading",
        cost_efficiency_trend="insufficient_data",
        confidence_level=0.99,
        data_points=5,
    )
    assert trends.error_rate_trend == "degrading" and trends.detail is None
    assert result(memory_usage=123_456_789).memory_usage == 123_456_789
    with pytest.raises(ValidationError, match="memory_usage"):
        result(memory_usage=-1)
    assert MockConfiguration().memory_usage_simulation is None
    with pytest.raises(ValidationError, match="memory_usage_simulation"):
        MockConfiguration(memory_usage_simulation=0)
