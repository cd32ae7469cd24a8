"""compare: the fastest, the most cost-effective and the most reliable target, and a 0-100 score."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas import CompareWeights
from stages.compare.transform import compare
from tests.conftest import CliResult
from tests.results_factory import result_row, results_frame, write_results

Run = Callable[..., CliResult]


def three_targets() -> list[dict[str, object]]:
    fast = result_row(
        0,
        target="fast",
        latency_p50_ms=200.0,
        latency_p90_ms=240.0,
        latency_p95_ms=250.0,
        latency_p99_ms=300.0,
        latency_p999_ms=320.0,
        latency_mean_ms=210.0,
        latency_min_ms=150.0,
        latency_max_ms=400.0,
        price_input_per_mtok=2.5,
        price_output_per_mtok=10.0,
    )
    cheap = result_row(1, target="cheap", price_input_per_mtok=0.1, price_output_per_mtok=0.4)
    steady = result_row(2, target="steady", successful=100, failed=0)
    flaky_cheap = result_row(
        3,
        target="cheap",
        successful=80,
        failed=20,
        error_rate=0.2,
        error_server_error=20,
        price_input_per_mtok=0.1,
        price_output_per_mtok=0.4,
    )
    old_fast = result_row(-1, target="fast", latency_p50_ms=100.0)  # older run: ignored
    return [old_fast, fast, cheap, steady, flaky_cheap]


def test_picks_and_scores_use_each_targets_latest_run() -> None:
    c = compare(results_frame(three_targets()), "chat", CompareWeights())
    assert (c.fastest, c.most_cost_effective, c.most_reliable) == ("fast", "cheap", "fast")
    table = {r["target"]: r for r in c.table.to_dicts()}
    assert table["cheap"]["success_rate"] == pytest.approx(0.8)
    assert table["fast"]["latency_score"] == pytest.approx(1.0)
    assert table["cheap"]["cost_score"] == pytest.approx(1.0)
    usd = table["cheap"]["usd_per_million_output_tokens"]
    assert usd == pytest.approx((30 * 0.1 + 40 * 0.4) / 40)  # per-request tokens × prices
    assert all(0 <= r["score"] <= 100 for r in table.values())
    assert c.table["score"].to_list() == sorted(c.table["score"].to_list(), reverse=True)


def test_weights_change_the_winner() -> None:
    rows = three_targets()
    by_latency = compare(
        results_frame(rows), "chat", CompareWeights(latency=1, cost=0, reliability=0)
    )
    by_cost = compare(results_frame(rows), "chat", CompareWeights(latency=0, cost=1, reliability=0))
    assert by_latency.table["target"][0] == "fast"
    assert by_cost.table["target"][0] == "cheap"


def test_cost_is_left_out_when_a_price_is_unknown() -> None:
    rows = [
        result_row(0, target="a"),
        result_row(1, target="b", price_input_per_mtok=None, price_output_per_mtok=None),
    ]
    c = compare(results_frame(rows), "chat", CompareWeights())
    assert not c.cost_included
    scores = dict(zip(c.table["target"].to_list(), c.table["score"].to_list(), strict=True))
    assert scores["a"] == pytest.approx(scores["b"])  # identical but for the missing price


def test_compare_from_the_cli(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_results(data, three_targets())
    out = json.loads(cli("--data-dir", str(data), "compare", "--json").out)
    assert [c["scenario"] for c in out] == ["chat"] and out[0]["fastest"] == "fast"
    text = cli("--data-dir", str(data), "compare", "--scenario", "chat").out
    assert "fastest: fast" in text and "most cost-effective: cheap" in text
    bad = cli("--data-dir", str(data), "compare", "--scenario", "nope")
    assert bad.code == 2 and "no results for scenario 'nope'" in bad.err


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_compare_json_is_valid_json_when_a_number_is_not_finite(cli: Run, tmp_path: Path) -> None:
    """A price past any real one made a cost infinite (and, with infinite weights, the score
    NaN): `--json` printed the bare words `Infinity`/`NaN`, which no JSON parser accepts."""
    data = tmp_path / "data"
    rows = three_targets()
    rows[-1] = {**rows[-1], "cost_usd": float("inf")}  # cheap's latest run
    write_results(data, rows)
    result = cli("--data-dir", str(data), "compare", "--json")
    assert result.code == 0
    parsed: Any = _strict_json(result.out)
    (chat,) = parsed
    costs = {t["target"]: t["usd_per_million_output_tokens"] for t in chat["targets"]}
    assert costs["cheap"] is None and costs["fast"] > 0


def test_scores_stay_finite_with_zero_latency_zero_cost_and_zero_weights() -> None:
    free = result_row(
        0, target="free", latency_p50_ms=0.0, latency_p95_ms=0.0, price_output_per_mtok=0.0
    )
    free = {**free, "price_input_per_mtok": 0.0, "cost_usd": 0.0}
    rows = [free, result_row(1, target="paid"), result_row(2, target="unpriced")]
    rows[2] = {**rows[2], "cost_usd": None}
    for weights in (CompareWeights(), CompareWeights(latency=0, cost=1, reliability=0)):
        for subset in (rows[:2], rows):
            table = compare(results_frame(subset), "chat", weights).table
            assert all(0 <= s <= 100 for s in table["score"].to_list()), table
