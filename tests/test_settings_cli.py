"""The config's [prices], [compare_weights], [trends] and [recommend] tables reach every command
that uses them.

Each test runs the real CLI on real files twice, once with a config that leaves the table out and
once with a config that sets it, on data where the setting decides the outcome: a command that
fell back to the defaults would give the same answer both times and fail here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.store.eventlog import EventLog
from tests.conftest import CliResult
from tests.eventgen import EPOCH, RunSpec, slowing_history, write_runs
from tests.results_factory import result_row, write_results

Run = Callable[..., CliResult]

TARGETS = """
[[targets]]
name = "mock-now"
provider = "mock"
model = "mock-small"
mock = { simulated_latency = "1ms", token_generation_rate = 5000, error_injection_rate = 0.0 }
"""
LENIENT_TRENDS = "\n[trends]\nconfidence_threshold = 0.95\n"
"""0.95 lets 4 strictly monotone runs (confidence 23/24 = 0.958) be a direction; 0.99 needs 5."""


def config(tmp_path: Path, name: str, *tables: str) -> str:
    path = tmp_path / name
    path.write_text(TARGETS + "".join(tables), encoding="utf-8")
    return str(path)


def climbing(count: int) -> list[dict[str, object]]:
    """`count` daily runs of chat@alpha whose mean latency grows 10% a run, nothing else moving."""
    return [result_row(i, latency_mean_ms=400.0 * 1.1**i) for i in range(count)]


def _prices(cheap: str, dear: str) -> str:
    """[prices] for the two models of `priced_runs`: `cheap` at cents, `dear` at dollars."""
    return (
        f'\n[prices."{cheap}"]\ninput = 0.1\noutput = 0.2\ncached_input = 0.05\n'
        f'\n[prices."{dear}"]\ninput = 10.0\noutput = 20.0\ncached_input = 5.0\n'
    )


def priced_runs(log: EventLog) -> None:
    """One run each of targets a and b, on models the shipped price table does not know."""
    write_runs(
        log,
        [
            RunSpec("r-a", target="a", provider="openai", model="model-a", error_rate=0.0, seed=1),
            RunSpec(
                "r-b",
                target="b",
                provider="openai",
                model="model-b",
                error_rate=0.0,
                seed=2,
                start=EPOCH + timedelta(minutes=1),
            ),
        ],
    )


def test_prices_table_decides_the_cost_columns_and_compares_cost_ranking(
    cli: Run, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    priced_runs(EventLog(data))
    plain = config(tmp_path, "plain.toml")
    a_cheap = config(tmp_path, "a.toml", _prices("model-a", "model-b"))
    b_cheap = config(tmp_path, "b.toml", _prices("model-b", "model-a"))
    results = data / "results/benchmark_results.parquet"

    def aggregate_and_compare(path: str) -> tuple[str, pl.DataFrame, dict[str, Any]]:
        built = cli("--config", path, "--data-dir", str(data), "aggregate")
        assert built.code == 0, built.err
        compared = cli("--config", path, "--data-dir", str(data), "compare", "--json")
        (chat,) = json.loads(compared.out)
        return built.err, pl.read_parquet(results).sort("target"), chat

    err, frame, chat = aggregate_and_compare(plain)
    assert "no price for models model-a, model-b" in err
    assert frame["cost_usd"].to_list() == [None, None]  # unknown: null, never 0
    assert chat["most_cost_effective"] is None and chat["cost_in_score"] is False

    for path, cheap in ((a_cheap, "a"), (b_cheap, "b")):
        err, frame, chat = aggregate_and_compare(path)
        assert "no price" not in err
        for row in frame.to_dicts():
            low = row["target"] == cheap
            price_in, price_out, price_cached = (0.1, 0.2, 0.05) if low else (10.0, 20.0, 5.0)
            assert (row["price_input_per_mtok"], row["price_output_per_mtok"]) == (
                price_in,
                price_out,
            )
            uncached = row["input_tokens"] - row["cached_tokens"]
            expected_in = (uncached * price_in + row["cached_tokens"] * price_cached) / 1e6
            assert row["cost_input_usd"] == pytest.approx(expected_in, rel=1e-12)
            assert row["cost_output_usd"] == pytest.approx(
                row["output_tokens"] * price_out / 1e6, rel=1e-12
            )
        assert chat["most_cost_effective"] == cheap and chat["cost_in_score"] is True
        costs = {t["target"]: t["cost_score"] for t in chat["targets"]}
        assert costs[cheap] == 1.0 and costs[({"a", "b"} - {cheap}).pop()] < 0.02


def _weights(latency: float, cost: float, reliability: float) -> str:
    return f"\n[compare_weights]\nlatency = {latency}\ncost = {cost}\nreliability = {reliability}\n"


def test_compare_weights_table_decides_the_score_and_the_winner(cli: Run, tmp_path: Path) -> None:
    """A fast, dear target and a slow, cheap one; which is first depends on the weights."""
    data = tmp_path / "data"
    fast = result_row(
        0,
        target="fast",
        latency_p50_ms=200.0,
        latency_p95_ms=250.0,
        price_input_per_mtok=2.5,
        price_output_per_mtok=10.0,
    )
    cheap = result_row(1, target="cheap", price_input_per_mtok=0.1, price_output_per_mtok=0.4)
    write_results(data, [fast, cheap])
    cases = [
        ("plain.toml", "", (0.4, 0.3, 0.3)),  # the documented defaults
        ("speed.toml", _weights(1, 0, 0), (1, 0, 0)),
        ("price.toml", _weights(0, 1, 0), (0, 1, 0)),
        ("mixed.toml", _weights(2, 1, 7), (2, 1, 7)),
    ]
    winners = {}
    for name, table, (w_lat, w_cost, w_rel) in cases:
        result = cli(
            "--config", config(tmp_path, name, table), "--data-dir", str(data), "compare", "--json"
        )
        assert result.code == 0, result.err
        (chat,) = json.loads(result.out)
        for row in chat["targets"]:
            weighted = (
                w_lat * row["latency_score"]
                + w_cost * row["cost_score"]
                + w_rel * row["reliability_score"]
            )
            assert row["score"] == pytest.approx(100 * weighted / (w_lat + w_cost + w_rel))
        winners[name] = chat["targets"][0]["target"]
    assert winners == {
        "plain.toml": "cheap",
        "speed.toml": "fast",
        "price.toml": "cheap",
        "mixed.toml": "fast",
    }


def test_trends_table_decides_the_profile_and_its_gate(cli: Run, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    write_results(tmp_path / "data", climbing(4))
    plain, lenient = config(tmp_path, "plain.toml"), config(tmp_path, "t.toml", LENIENT_TRENDS)

    default = cli("--config", plain, "--data-dir", data, "profile", "--fail-on-regression")
    assert default.code == 0
    assert "a trend direction needs at least 5 runs" in default.err

    result = cli("--config", lenient, "--data-dir", data, "profile", "--fail-on-regression")
    assert result.code == 3
    assert "REGRESSION chat @ alpha: latency degrading" in result.err
    assert "needs at least" not in result.err  # 4 runs are enough with this threshold


def test_trends_table_decides_what_the_report_says(cli: Run, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    write_results(tmp_path / "data", climbing(4))
    plain, lenient = config(tmp_path, "plain.toml"), config(tmp_path, "t.toml", LENIENT_TRENDS)
    assert cli("--config", plain, "--data-dir", data, "profile").code == 0
    page = tmp_path / "report.html"

    assert cli("--config", plain, "--data-dir", data, "report", "--out", str(page)).code == 0
    assert "a direction needs at least 5 runs" in page.read_text()
    assert cli("--config", lenient, "--data-dir", data, "report", "--out", str(page)).code == 0
    assert "a direction needs at least 4 runs" in page.read_text()


def test_recommend_table_decides_what_recommend_finds(cli: Run, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    write_results(tmp_path / "data", [result_row(0, peak_memory_bytes=900 << 20)])
    small = "\n[recommend]\nclient_memory_bytes = 536870912\n"  # 512 MiB instead of 1 GiB
    plain, strict = config(tmp_path, "plain.toml"), config(tmp_path, "r.toml", small)
    assert cli("--config", plain, "--data-dir", data, "profile").code == 0

    def fired(path: str) -> list[str]:
        result = cli("--config", path, "--data-dir", data, "recommend", "--json")
        assert result.code == 0, result.err
        return [r["rule_id"] for r in json.loads(result.out)["recommendations"]]

    assert fired(plain) == []
    assert fired(strict) == ["client-memory"]
    md = (tmp_path / "data/recommendations/recommendations.md").read_text()
    assert "0.9 GiB" in md


def test_run_passes_both_tables_to_its_stages(cli: Run, tmp_path: Path) -> None:
    """`pipeline run`: four climbing runs of chat@mock-fast already stored, one more executed."""
    data = tmp_path / "data"
    write_runs(EventLog(data), slowing_history(4, growth=1.3))
    every_tail = "\n[recommend]\ntail_ratio = 1.0\ntail_min_requests = 1\n"
    plain = config(tmp_path, "plain.toml")
    both = config(tmp_path, "both.toml", LENIENT_TRENDS, every_tail)
    args = ("-q", "--data-dir", str(data), "run", "--requests", "4", "--seed", "1")

    def run(path: str) -> tuple[int, dict[str, str], set[str]]:
        result = cli("--config", path, *args, "--fail-on-regression", "--json")
        summary = json.loads(result.out)
        trends = {p["target"]: p["latency_trend"] for p in summary["profile"]["profiles"]}
        rules = {r["rule_id"] for r in summary["recommend"]["recommendations"]}
        return result.code, trends, rules

    code, trends, rules = run(plain)
    assert (code, trends["mock-fast"]) == (0, "stable")
    assert "tail-latency" not in rules and "trend-degrading" not in rules

    code, trends, rules = run(both)
    assert (code, trends["mock-fast"]) == (3, "degrading")
    assert {"tail-latency", "trend-degrading"} <= rules


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("error_rate = 1.5", "recommend.error_rate: Input should be less than or equal to 1"),
        ("tail_ratio = nan", "recommend.tail_ratio: Input should be a finite number"),
        ("cheaper_cost_ratio = inf", "recommend.cheaper_cost_ratio: Input should be a finite"),
        ("tail_min_requests = 2.5", "recommend.tail_min_requests: Input should be a valid integer"),
        ("knee_min_concurrencies = 1", "recommend.knee_min_concurrencies: Input should be greater"),
        ("eror_rate = 0.1", "recommend.eror_rate: Extra inputs are not permitted"),
    ],
)
def test_a_bad_recommend_value_exits_2_naming_the_field(
    cli: Run, tmp_path: Path, line: str, message: str
) -> None:
    path = config(tmp_path, "bad.toml", f"\n[recommend]\n{line}\n")
    data = tmp_path / "data"
    write_results(data, [result_row(0)])
    result = cli("--config", path, "--data-dir", str(data), "recommend")
    assert result.code == 2
    assert f"{path}: {message}" in result.err
    assert "Traceback" not in result.err
    assert not (data / "recommendations").exists()  # refused before anything was written
