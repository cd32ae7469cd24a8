"""profile and recommend on a fixed set of results give exactly the committed golden outputs.

The golden files under tests/golden/profile_recommend/ were written by the code as it was before
the trend statistics were split into modules and the thresholds moved into settings models: a
refactor that changes any value (down to a float's last bit), any wording or any order fails
here. The Parquet files are compared through their rows (every column, floats by `repr`), not
their bytes, so an upgrade of the Parquet writer does not break the test while a change of the
stages does; the Markdown is compared as it is. The results are built row by row (no events, no
aggregate), so only `profile` and `recommend` are under test.

Set PIPELINE_UPDATE_GOLDEN=1 to rewrite the files after an intended change, and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from schemas import CompareSettings, RecommendSettings, TrendSettings
from stages.profile.run import run_profile
from stages.recommend.run import run_recommend
from tests.results_factory import result_row, write_results

GOLDEN = Path(__file__).parent / "golden" / "profile_recommend"
UPDATE = os.environ.get("PIPELINE_UPDATE_GOLDEN") == "1"


def _wiggle(i: int) -> float:
    """Deterministic noise of about ±3%, the same on every machine (no random generator)."""
    return 1.0 + 0.03 * (((i * 37) % 7) - 3) / 3.0


def _latency(value: float) -> dict[str, float]:
    return {
        "latency_mean_ms": value,
        "latency_p50_ms": value * 0.95,
        "latency_p90_ms": value * 1.1,
        "latency_p95_ms": value * 1.2,
        "latency_p99_ms": value * 1.4,
        "latency_p999_ms": value * 1.5,
        "latency_min_ms": value * 0.5,
        "latency_max_ms": value * 1.6,
    }


def golden_results() -> list[dict[str, Any]]:
    """Histories on which every rule fires and every kind of trend outcome shows."""
    rows: list[dict[str, Any]] = []
    gpt4o = {"model": "gpt-4o", "price_input_per_mtok": 2.5, "price_output_per_mtok": 10.0}
    # alpha: latency climbing 4% a run (degrading), an expensive model, a heavy tail at the end.
    for i in range(10):
        rows.append(
            result_row(i, target="alpha", **gpt4o, **_latency(400.0 * 1.04**i * _wiggle(i)))
        )
    rows[-1] |= {"latency_p99_ms": rows[-1]["latency_p50_ms"] * 4.0}
    # beta: cheap and as fast, with a 35% latency step at run 7 (a change point) and a
    # throughput that drifts up (improving).
    for i in range(12):
        step = 1.35 if i >= 7 else 1.0
        rows.append(
            result_row(
                100 + i,
                target="beta",
                throughput_rps=10.0 * 1.03**i * _wiggle(i + 3),
                **_latency(380.0 * step * _wiggle(i + 1)),
            )
        )
    # gamma: rate limited and failing on its latest run, error rate rising over six runs.
    for i in range(6):
        failed = 2 * i + 1
        rows.append(
            result_row(
                200 + i,
                target="gamma",
                provider="anthropic",
                model="claude-haiku-4-5",
                failed=failed + 8,
                successful=100 - failed - 8,
                error_rate=(failed + 8) / 100,
                error_rate_limited=8,
                error_server_error=failed,
                **_latency(500.0 * _wiggle(i)),
            )
        )
    # delta: a concurrency sweep whose throughput stops growing at 4 (the knee).
    for i, (concurrency, rps, p50) in enumerate(
        [(1, 10.0, 100.0), (4, 38.0, 105.0), (16, 40.0, 400.0), (64, 41.0, 1600.0)]
    ):
        rows.append(
            result_row(
                300 + i,
                scenario="sweep",
                target="delta",
                concurrency=concurrency,
                throughput_rps=rps,
                **_latency(p50 / 0.95),
            )
        )
    # epsilon: long unstreamed prompts on a client near its memory limit; throughput rising
    # strictly over 5 runs (the fewest that can give a direction).
    epsilon = {
        "scenario": "long",
        "target": "epsilon",
        "input_tokens": 2000 * 100,
        "cached_tokens": 1000,
        "ttft_p50_ms": 395.0,
        "peak_memory_bytes": (3 << 30) // 2,
    }
    rows += [result_row(400 + i, throughput_rps=8.0 * 1.1**i, **epsilon) for i in range(5)]
    # zeta: two unpriced runs (insufficient data, null cost).
    unpriced = dict.fromkeys(
        ("price_input_per_mtok", "price_output_per_mtok", "price_cached_input_per_mtok")
    )
    rows += [result_row(500 + i, target="zeta", model="my-finetune", **unpriced) for i in (0, 1)]
    return rows


def _rows_text(path: Path) -> str:
    """One JSON object per row, keys sorted, floats exact (`repr`), instants as ISO strings."""
    frame = pl.read_parquet(path)
    return "".join(
        json.dumps(row, sort_keys=True, default=str) + "\n" for row in frame.iter_rows(named=True)
    )


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file"


def test_profile_and_recommend_match_the_golden_files(data_dir: Path) -> None:
    write_results(data_dir, golden_results())
    profiles = run_profile(data_dir, TrendSettings())
    recs = run_recommend(data_dir, RecommendSettings(), CompareSettings())
    _check("profiles.jsonl", _rows_text(Path(profiles.path)))
    _check("recommendations.jsonl", _rows_text(Path(recs.path)))
    _check("recommendations.md", Path(recs.markdown).read_text(encoding="utf-8"))


def test_the_golden_set_exercises_every_rule_and_outcome() -> None:
    """The golden files are only as strong as what they hold: each rule and outcome is there."""
    recs = (GOLDEN / "recommendations.jsonl").read_text(encoding="utf-8").splitlines()
    fired = {json.loads(line)["rule_id"] for line in recs}
    assert fired == {
        "trend-degrading",
        "rate-limited",
        "error-rate",
        "tail-latency",
        "saturation-knee",
        "cheaper-target",
        "enable-streaming",
        "prompt-caching",
        "client-memory",
    }
    profiles = [json.loads(line) for line in (GOLDEN / "profiles.jsonl").read_text().splitlines()]
    trends = {p[f"{m}_trend"] for p in profiles for m in ("latency", "throughput", "error_rate")}
    assert {"improving", "degrading", "stable", "insufficient_data"} <= trends
    assert any(p["latency_change_point_run_id"] for p in profiles)
