"""The SLO declaration: what a scenario and `--slo` accept, and what they refuse (naming the field)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from schemas import BenchmarkScenario, Slo, parse_slo


def test_parse_slo_round_trip() -> None:
    slo = parse_slo(" ttft=500ms, tpot=50ms ,latency=10s,attainment=0.9")
    assert slo == Slo(
        ttft=timedelta(milliseconds=500),
        tpot=timedelta(milliseconds=50),
        latency=timedelta(seconds=10),
        attainment=0.9,
    )
    assert slo.label() == "ttft≤500ms tpot≤50ms latency≤10s"
    assert slo.thresholds_us() == {"ttft": 500_000, "tpot": 50_000, "latency": 10_000_000}
    assert parse_slo("latency=1.5").label() == "latency≤1500ms"
    assert parse_slo("tpot=250us").attainment == 0.95


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("ttft=0", "ttft", "must be a positive duration"),
        ("ttft=0.1us", "ttft", "must be a positive duration"),
        ("tpot=-1s", "tpot", "invalid duration"),
        ("latency=abc", "latency", "invalid duration"),
        ("latency=1e400", "latency", "finite"),
        ("latency=8d", "latency", "at most 7 days"),
        ("ttft=1s,attainment=0", "attainment", "greater than 0"),
        ("ttft=1s,attainment=1.01", "attainment", "less than or equal to 1"),
        ("ttft=1s,attainment=nan", "attainment", "finite"),
        ("ttft=1s,attainment=lots", "attainment", "valid number"),
        ("ttfb=1s", "ttfb", "Extra inputs are not permitted"),
        ("ttft=1s,ttft=2s", "ttft", "given twice"),
        ("attainment=0.9", None, "at least one threshold"),
        ("garbage", None, "key=value"),
        ("", None, "key=value"),
        ("ttft=1s,", None, "key=value"),
    ],
)
def test_parse_slo_refuses(text: str, field: str | None, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_slo(text)
    (problem,) = info.value.errors()
    assert problem["loc"] == ((field,) if field else ())
    assert message in problem["msg"]


def test_scenario_takes_an_slo_table() -> None:
    scenario = BenchmarkScenario.model_validate(
        {"name": "s", "test_prompts": ["hi"], "slo": {"ttft": "500ms", "attainment": 0.99}}
    )
    assert scenario.slo == Slo(ttft=timedelta(milliseconds=500), attainment=0.99)
    # Recorded in the run's scenario_config as JSON and read back the same.
    again = BenchmarkScenario.model_validate_json(scenario.model_dump_json())
    assert again.slo == scenario.slo
    assert BenchmarkScenario.model_validate({"name": "s", "test_prompts": ["hi"]}).slo is None
