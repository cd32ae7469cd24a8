"""Each recommendation rule fires on the data it is for and stays silent on data it is not for."""

from __future__ import annotations

import json
import random
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.store.eventlog import EventLog
from schemas import CompareSettings, RecommendSettings, TrendSettings
from stages.profile.transform import PROFILE_SCHEMA, profile
from stages.recommend.evidence import binomial_sf
from stages.recommend.run import run_recommend
from stages.recommend.transform import Recommendations, recommend, to_markdown
from tests.cli_proc import run_batch
from tests.conftest import ROOT, CliResult, run_pipeline
from tests.eventgen import EPOCH, RunSpec, write_runs
from tests.results_factory import result_row, results_frame, write_results

Run = Callable[..., CliResult]
NO_PROFILES = PROFILE_SCHEMA.to_frame()
MIN = CompareSettings().min_requests


def fired(rows: list[dict[str, Any]], profiles: pl.DataFrame = NO_PROFILES) -> pl.DataFrame:
    return recommend(results_frame(rows), profiles, RecommendSettings(), MIN).frame


def rules(rows: list[dict[str, Any]]) -> list[str]:
    return fired(rows)["rule_id"].to_list()


def test_healthy_results_get_no_recommendation() -> None:
    assert rules([result_row(0), result_row(1, target="beta")]) == []


@pytest.mark.parametrize(
    ("rule", "firing", "silent"),
    [
        (
            "rate-limited",
            {"failed": 10, "successful": 90, "error_rate": 0.1, "error_rate_limited": 10},
            {"failed": 0},
        ),
        (
            "error-rate",
            {"failed": 10, "successful": 90, "error_rate": 0.1, "error_server_error": 10},
            {"failed": 1, "successful": 99, "error_rate": 0.01, "error_server_error": 1},
        ),
        (
            "tail-latency",
            {"latency_p99_ms": 2000.0, "latency_max_ms": 2500.0},
            {"latency_p99_ms": 700.0},
        ),
        ("enable-streaming", {"ttft_p50_ms": 395.0}, {"ttft_p50_ms": 80.0}),
        (
            "prompt-caching",
            {"input_tokens": 2000 * 100},
            {"input_tokens": 2000 * 100, "cached_tokens": 150000},
        ),
        ("client-memory", {"peak_memory_bytes": 2 << 30}, {"peak_memory_bytes": 900 << 20}),
    ],
)
def test_single_result_rules(rule: str, firing: dict[str, Any], silent: dict[str, Any]) -> None:
    assert rule in rules([result_row(0, **firing)])
    assert rule not in rules([result_row(0, **silent)])


def _limited(count: int, attempts: int = 100, **overrides: Any) -> dict[str, Any]:
    """A result whose `count` of `attempts` attempts got HTTP 429."""
    return result_row(
        0,
        operations=attempts,
        failed=count,
        successful=attempts - count,
        error_rate=count / attempts,
        error_rate_limited=count,
        **overrides,
    )


def test_rate_limiting_priority_grows_with_its_evidence() -> None:
    high = fired([_limited(10)])  # P(X >= 10 | 100, 5%) = 0.028: significantly above 5%
    low = fired([_limited(4)])  # P(X >= 4 | 100, 1%) = 0.018, but P(X >= 4 | 100, 5%) = 0.74
    assert high.filter(pl.col("rule_id") == "rate-limited")["priority"].to_list() == ["high"]
    assert low.filter(pl.col("rule_id") == "rate-limited")["priority"].to_list() == ["medium"]
    evidence = json.loads(high.filter(pl.col("rule_id") == "rate-limited")["evidence"][0])
    assert evidence["test"] == {
        "name": "one-sided exact binomial",
        "null_hypothesis": "share <= 0.01",
        "p_value": 7.7e-08,
        "significance": 0.05,
        "min_events": 3,
    }
    assert evidence["high_priority_test"]["p_value"] == 0.029  # 0.02819 rounded up
    assert (evidence["attempts"], evidence["rate_limited"], evidence["share"]) == (100, 10, 0.1)
    description = high.filter(pl.col("rule_id") == "rate-limited")["description"][0]
    assert (
        "significantly above 1.0% (one-sided exact binomial test, p = 7.7e-08 ≤ 0.05" in description
    )


def test_one_429_in_five_attempts_is_no_evidence() -> None:
    """The issue's case: one injected 429 in 5 attempts at concurrency 4 gave a HIGH "lower the
    concurrency below 4" (for a mock whose limit is 50). Not even with every run allowed."""
    rows = [_limited(1, attempts=5)]
    out = recommend(results_frame(rows), NO_PROFILES, RecommendSettings(), 1).frame
    assert "rate-limited" not in out["rule_id"].to_list()
    many = [_limited(3, attempts=5)]  # 3 of 5: p = 1e-5 against 1%, and 3 events: it fires
    out = recommend(results_frame(many), NO_PROFILES, RecommendSettings(), 1).frame
    assert out.filter(pl.col("rule_id") == "rate-limited")["priority"].to_list() == ["high"]


def test_lowering_the_concurrency_is_advised_only_when_a_lower_one_shows_it_helps() -> None:
    alone = fired([_limited(10, concurrency=8)])
    (text,) = alone.filter(pl.col("rule_id") == "rate-limited")["description"].to_list()
    assert "No run at a lower concurrency shows whether fewer requests in flight would help" in text
    assert "run at" not in text.split(":", 1)[0]
    calm = result_row(1, concurrency=4, error_rate_limited=0)
    sweep_out = fired([_limited(10, concurrency=8), calm])
    (text,) = sweep_out.filter(pl.col("rule_id") == "rate-limited")["description"].to_list()
    assert (
        "At concurrency 4 (run run-001) 0 of 100 attempts got HTTP 429: run at 4 in flight" in text
    )
    as_bad = result_row(1, concurrency=4, error_rate_limited=12, failed=12, successful=88)
    worse_out = fired([_limited(10, concurrency=8), as_bad])
    texts = worse_out.filter(pl.col("rule_id") == "rate-limited")["description"].to_list()
    assert all("No run at a lower concurrency" in t for t in texts) and len(texts) == 2


def test_binomial_tail_matches_the_sum_of_its_terms() -> None:
    from math import comb

    for n in (1, 5, 20, 100):
        for k in range(n + 1):
            for p in (0.0, 0.01, 0.05, 0.5, 1.0):
                exact = sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
                assert binomial_sf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def sweep(throughputs: list[float], latencies: list[float]) -> list[dict[str, Any]]:
    return [
        result_row(
            i,
            concurrency=c,
            throughput_rps=t,
            latency_p50_ms=lat,
            latency_mean_ms=lat,
            latency_p90_ms=lat * 1.1,
            latency_p95_ms=lat * 1.2,
            latency_p99_ms=lat * 1.3,
            latency_p999_ms=lat * 1.4,
            latency_max_ms=lat * 1.5,
            latency_min_ms=lat * 0.5,
        )
        for i, (c, t, lat) in enumerate(zip([1, 4, 16, 64], throughputs, latencies, strict=False))
    ]


def test_the_saturation_knee_is_found_where_throughput_stops_growing() -> None:
    out = fired(sweep([10, 38, 40, 41], [100, 105, 400, 1600]))
    knee = out.filter(pl.col("rule_id") == "saturation-knee")
    assert knee["title"].to_list() == ["alpha saturates at concurrency 4 on chat"]
    assert knee["evidence_run_ids"].to_list() == [["run-000", "run-001", "run-002", "run-003"]]
    assert "saturation-knee" not in rules(sweep([10, 40, 150, 600], [100, 100, 105, 110]))
    assert "saturation-knee" not in rules(sweep([10, 38], [100, 400]))  # two points are no sweep


def test_a_cheaper_target_with_similar_latency_is_suggested() -> None:
    expensive = result_row(0, target="alpha", price_input_per_mtok=2.5, price_output_per_mtok=10.0)
    cheap = result_row(
        1, target="beta", latency_p95_ms=520.0, latency_p99_ms=620.0, latency_max_ms=720.0
    )
    out = fired([expensive, cheap]).filter(pl.col("rule_id") == "cheaper-target")
    assert out["target"].to_list() == ["alpha"]
    assert out["title"][0].startswith("beta costs 94% less than alpha")
    slow_cheap = {
        **cheap,
        "latency_p95_ms": 900.0,
        "latency_p99_ms": 950.0,
        "latency_max_ms": 999.0,
    }
    assert "cheaper-target" not in rules([expensive, slow_cheap])
    similar_price = result_row(
        1, target="beta", price_input_per_mtok=2.0, price_output_per_mtok=9.0
    )
    assert "cheaper-target" not in rules([expensive, similar_price])


def test_a_degrading_profile_is_a_high_priority_recommendation() -> None:
    rows = [result_row(i, latency_mean_ms=400.0 * 1.05**i) for i in range(8)]
    profiles = profile(results_frame(rows).lazy(), TrendSettings())
    out = fired(rows, profiles)
    top = out.row(0, named=True)
    assert (top["rule_id"], top["priority"]) == ("trend-degrading", "high")
    assert top["evidence_run_ids"][0] == "run-000" and top["evidence_run_ids"][-1] == "run-007"
    steady = profile(results_frame([result_row(i) for i in range(8)]).lazy(), TrendSettings())
    assert (
        "trend-degrading"
        not in fired([result_row(i) for i in range(8)], steady)["rule_id"].to_list()
    )


def test_order_is_deterministic_whatever_the_input_order() -> None:
    rows = [
        result_row(0, failed=10, successful=90, error_rate=0.1, error_rate_limited=10),
        result_row(1, target="beta", ttft_p50_ms=395.0, peak_memory_bytes=2 << 30),
        result_row(2, target="gamma", latency_p99_ms=2000.0, latency_max_ms=2500.0),
    ]
    first = fired(rows)
    random.Random(3).shuffle(rows)
    assert fired(rows).equals(first)
    assert first["priority"].to_list() == sorted(
        first["priority"].to_list(), key=["high", "medium", "low"].index
    )


def test_markdown_lists_each_recommendation_with_its_evidence() -> None:
    out = fired([result_row(0, peak_memory_bytes=2 << 30)])
    text = to_markdown(Recommendations(out))
    assert "## Low priority" in text and out["title"][0] in text and "`run-000`" in text
    assert "no rule fired" in to_markdown(Recommendations(fired([result_row(0)])))


def test_the_stage_writes_parquet_and_markdown(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_results(data, [result_row(0, peak_memory_bytes=2 << 30)])
    assert cli("--data-dir", str(data), "recommend").code == 1  # profiles are missing
    assert cli("--data-dir", str(data), "profile").code == 0
    result = cli("--data-dir", str(data), "recommend", "--json")
    assert result.code == 0
    assert [r["rule_id"] for r in json.loads(result.out)["recommendations"]] == ["client-memory"]
    assert "client-memory" in (data / "recommendations/recommendations.md").read_text()
    before = (data / "recommendations/recommendations.parquet").read_bytes()
    run_recommend(data, RecommendSettings(), CompareSettings())
    assert (data / "recommendations/recommendations.parquet").read_bytes() == before


def _cheap(**overrides: Any) -> list[dict[str, Any]]:
    """An expensive target (alpha) and a cheaper, as fast one (beta) on the same scenario."""
    expensive = result_row(0, target="alpha", price_input_per_mtok=2.5, price_output_per_mtok=10.0)
    return [expensive, result_row(1, target="beta", **{"latency_p95_ms": 520.0, **overrides})]


_SLOW = {"latency_p95_ms": 900.0, "latency_p99_ms": 950.0, "latency_max_ms": 999.0}
_KNEE = sweep([10, 40, 43, 46], [100, 100, 200, 400])  # +7.5% throughput, +100% latency at 4→16
_UNSTREAMED = {"ttft_p50_ms": 395.0}
_LONG = {"input_tokens": 2000 * 100}

SETTING_CASES: list[tuple[str, object, list[dict[str, Any]], str, list[str], list[str]]] = [
    # (setting, value, results, rule, its priorities with the default, with the value)
    ("min_events", 2, [_limited(2, attempts=20)], "rate-limited", [], ["medium"]),
    ("significance", 0.1, [_limited(3)], "rate-limited", [], ["medium"]),
    ("rate_limited_share", 0.02, [_limited(4)], "rate-limited", ["medium"], []),
    ("rate_limited_high", 0.01, [_limited(4)], "rate-limited", ["medium"], ["high"]),
    (
        "error_rate",
        0.02,
        [result_row(0, failed=6, successful=94, error_server_error=6)],
        "error-rate",
        [],
        ["high"],
    ),
    ("tail_ratio", 2.0, [result_row(0, latency_p99_ms=800.0)], "tail-latency", [], ["medium"]),
    (
        "tail_min_requests",
        10,
        [result_row(0, operations=10, latency_p99_ms=2000.0, latency_max_ms=2500.0)],
        "tail-latency",
        [],
        ["medium"],
    ),
    ("knee_min_concurrencies", 2, sweep([10, 10.5], [100, 400]), "saturation-knee", [], ["medium"]),
    ("knee_throughput_gain", 0.05, _KNEE, "saturation-knee", ["medium"], []),
    ("knee_latency_growth", 1.5, _KNEE, "saturation-knee", ["medium"], []),
    ("cheaper_cost_ratio", 0.05, _cheap(), "cheaper-target", ["medium"], []),
    ("cheaper_latency_ratio", 2.0, _cheap(**_SLOW), "cheaper-target", [], ["medium"]),
    ("cheaper_error_margin", 0.05, _cheap(error_rate=0.03), "cheaper-target", [], ["medium"]),
    ("streaming_ttft_ratio", 0.99, [result_row(0, **_UNSTREAMED)], "enable-streaming", ["low"], []),
    (
        "streaming_min_output_tokens",
        50.0,
        [result_row(0, **_UNSTREAMED)],
        "enable-streaming",
        ["low"],
        [],
    ),
    ("caching_min_input_tokens", 3000.0, [result_row(0, **_LONG)], "prompt-caching", ["low"], []),
    (
        "caching_max_cached_share",
        0.8,
        [result_row(0, **_LONG, cached_tokens=150000)],
        "prompt-caching",
        [],
        ["low"],
    ),
    (
        "client_memory_bytes",
        800 << 20,
        [result_row(0, peak_memory_bytes=900 << 20)],
        "client-memory",
        [],
        ["low"],
    ),
]


@pytest.mark.parametrize(
    ("setting", "value", "rows", "rule", "default", "changed"),
    SETTING_CASES,
    ids=[case[0] for case in SETTING_CASES],
)
def test_each_setting_moves_its_rule(
    setting: str,
    value: object,
    rows: list[dict[str, Any]],
    rule: str,
    default: list[str],
    changed: list[str],
) -> None:
    def priorities(settings: RecommendSettings) -> list[str]:
        # min_requests 1: each case is about its own setting, not about which run is used
        out = recommend(results_frame(rows), NO_PROFILES, settings, 1).frame
        return out.filter(pl.col("rule_id") == rule)["priority"].to_list()

    assert priorities(RecommendSettings()) == default
    assert priorities(RecommendSettings.model_validate({setting: value})) == changed


def test_every_setting_has_a_case_that_moves_its_rule() -> None:
    """A threshold added to RecommendSettings but not used by its rule fails here first."""
    assert {case[0] for case in SETTING_CASES} == set(RecommendSettings.model_fields)


def test_the_readme_documents_every_setting_with_its_default() -> None:
    """The README's `[recommend]` example is the defaults, and the rule table names each one."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Recommendations") : readme.index("## Compare")]
    block = section[
        section.index("```toml\n[recommend]") + len("```toml") : section.index("```\n\n")
    ]
    example = tomllib.loads(block)["recommend"]
    assert set(example) == set(RecommendSettings.model_fields)
    assert RecommendSettings.model_validate(example) == RecommendSettings()
    table = section[: section.index("```toml")]
    assert all(f"`{name}`" in table for name in RecommendSettings.model_fields)


def test_a_smoke_test_does_not_replace_the_run_recommend_looks_at(tmp_path: Path) -> None:
    """Real events, aggregate, profile and recommend in their own processes: a failing 5-request
    run after a healthy 200-request one is passed over (and said to be), as in compare."""
    smoke_start = EPOCH + timedelta(hours=1)
    write_runs(
        EventLog(tmp_path / "data"),
        [
            RunSpec("full", requests=200, error_rate=0.0),
            RunSpec(
                "smoke", requests=5, warmup=0, error_rate=1.0, retry_rate=0.0, start=smoke_start
            ),
        ],
    )
    for command in ("aggregate", "profile"):
        assert run_pipeline("-q", "--data-dir", "data", command, cwd=tmp_path).returncode == 0
    proc = run_pipeline("--data-dir", "data", "recommend", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["recommendations"] == []
    (passed,) = out["passed_over"]
    assert (
        passed["used_run_id"] == "full" and "run smoke measured 5 requests" in passed["reasons"][0]
    )
    text = (tmp_path / "data/recommendations/recommendations.md").read_text()
    assert "## Runs not used" in text and "run smoke measured 5 requests" in text


WOLF = """
default_scenarios = ["chat"]

[[targets]]
name = "mock-50"
provider = "mock"
model = "mock-small"
mock = { simulated_latency = "1ms", token_generation_rate = 5000, error_injection_rate = 0.2, error_kinds = ["rate_limit"], concurrency_limit = 50 }

[[targets]]
name = "mock-2"
provider = "mock"
model = "mock-small"
mock = { simulated_latency = "20ms", token_generation_rate = 5000, concurrency_limit = 2, overload = "reject" }

[[scenarios]]
name = "chat"
test_prompts = ["hi"]
expected_operations = 5
concurrency_level = 4
max_tokens = 8

[compare]
min_requests = 1
"""


def test_rate_limiting_needs_evidence_in_real_processes(tmp_path: Path) -> None:
    """The issue's cry-wolf case through the real pipeline: one injected 429 in 5 attempts
    against a mock whose limit is 50 (every run allowed, `min_requests = 1`) is no rate-limited
    recommendation; a mock that really rejects past 2 in flight is, and the advice to run at 2
    comes from the run at 2 that shows it."""
    (tmp_path / "pipeline.toml").write_text(WOLF, encoding="utf-8")
    data = ["--data-dir", "data"]
    steps = [
        [*data, "execute", "--target", "mock-50", "--seed", "1"],  # seed 1: index 0 gets a 429
        [*data, "execute", "--target", "mock-2", "--requests", "40", "--concurrency", "8"],
        [*data, "execute", "--target", "mock-2", "--requests", "40", "--concurrency", "2"],
        [*data, "aggregate"],
        [*data, "profile"],
        [*data, "recommend"],
    ]
    done = run_batch(steps, cwd=tmp_path)
    assert [d["code"] for d in done] == [0] * len(steps), done
    results = pl.read_parquet(tmp_path / "data/results/benchmark_results.parquet")
    wolf = results.filter(pl.col("target") == "mock-50").row(0, named=True)
    assert (wolf["operations"], wolf["error_rate_limited"]) == (5, 1)
    found = pl.read_parquet(tmp_path / "data/recommendations/recommendations.parquet")
    limited = found.filter(pl.col("rule_id") == "rate-limited")
    assert limited["target"].to_list() == ["mock-2"], found.select("rule_id", "target", "title")
    (row,) = limited.to_dicts()
    assert row["title"] == "mock-2 is rate limited at concurrency 8" and row["priority"] == "high"
    assert "got HTTP 429: run at 2 in flight" in row["description"]
    evidence = json.loads(row["evidence"])
    assert evidence["test"]["name"] == "one-sided exact binomial"
    assert evidence["test"]["p_value"] <= 0.05 and evidence["lower_concurrency"]["concurrency"] == 2


def _slo_row(index: int, target: str, good: int, **overrides: Any) -> dict[str, Any]:
    """A result judged by `ttft≤500ms tpot≤50ms` at 95%: `good` of 100 attempts within it."""
    row = result_row(
        index,
        target=target,
        slo="ttft≤500ms tpot≤50ms",
        slo_attainment_target=0.95,
        slo_ttft_ms=500.0,
        slo_tpot_ms=50.0,
        slo_good=good,
        slo_attainment=good / 100,
        slo_ttft_attainment=min(1.0, (good + 5) / 100),
        slo_tpot_attainment=good / 100,
        goodput_rps=good / 10,
        slo_met=good >= 95,
    )
    return row | overrides


def test_a_missed_slo_names_the_threshold_and_a_target_that_meets_it() -> None:
    out = fired([_slo_row(0, "alpha", 80), _slo_row(1, "beta", 99)])
    found = out.filter(pl.col("rule_id") == "slo-missed").to_dicts()
    assert len(found) == 1
    (rec,) = found
    assert rec["priority"] == "high" and rec["target"] == "alpha"
    assert rec["title"] == (
        "alpha misses the SLO on chat: 80.0% within ttft≤500ms tpot≤50ms, 95.0% needed"
    )
    assert "The threshold that breaks first is tpot (80.0% of attempts" in rec["description"]
    assert "beta meets the SLO at 99.0% attainment, alpha at 80.0%." in rec["description"]
    evidence = json.loads(rec["evidence"])
    assert evidence["alternative"]["target"] == "beta" and evidence["misses"] == 20
    assert rec["evidence_run_ids"] == ["run-000", "run-001"]


def test_slo_missed_needs_evidence_and_a_miss() -> None:
    assert "slo-missed" not in rules([_slo_row(0, "alpha", 95)])  # met exactly
    assert "slo-missed" not in rules([result_row(0)])  # no SLO applied
    # 8 misses in 100 against 5% allowed: p ≈ 0.13, not significant at 0.05.
    assert "slo-missed" not in rules([_slo_row(0, "alpha", 92)])
    lone = fired([_slo_row(0, "alpha", 70)]).filter(pl.col("rule_id") == "slo-missed")
    assert "Lower the load (concurrency or rate), or relax the SLO." in lone["description"][0]
    # A target judged by another SLO is no alternative.
    other = _slo_row(1, "beta", 100, slo="latency≤10s")
    rec = fired([_slo_row(0, "alpha", 70), other]).filter(pl.col("rule_id") == "slo-missed")
    assert "beta" not in rec["description"][0]
