"""compare: the fastest, the most cost-effective and the most reliable target, and a 0-100 score."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.store.eventlog import EventLog
from schemas import CompareSettings, CompareWeights
from stages.compare.selection import select_runs
from stages.compare.transform import compare
from tests import eventgen
from tests.conftest import CliResult, run_pipeline
from tests.eventgen import RunSpec, write_runs
from tests.results_factory import result_row, results_frame, write_results

Run = Callable[..., CliResult]
MIN = CompareSettings().min_requests


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
    c = compare(results_frame(three_targets()), "chat", CompareWeights(), MIN)
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
        results_frame(rows), "chat", CompareWeights(latency=1, cost=0, reliability=0), MIN
    )
    by_cost = compare(
        results_frame(rows), "chat", CompareWeights(latency=0, cost=1, reliability=0), MIN
    )
    assert by_latency.table["target"][0] == "fast"
    assert by_cost.table["target"][0] == "cheap"


def test_cost_is_left_out_when_a_price_is_unknown() -> None:
    rows = [
        result_row(0, target="a"),
        result_row(1, target="b", price_input_per_mtok=None, price_output_per_mtok=None),
    ]
    c = compare(results_frame(rows), "chat", CompareWeights(), MIN)
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
            table = compare(results_frame(subset), "chat", weights, MIN).table
            assert all(0 <= s <= 100 for s in table["score"].to_list()), table


def test_a_smoke_test_does_not_replace_a_full_run() -> None:
    """The issue's case: a 5-request run after a 100-request one made the slow target win."""
    rows = [
        result_row(0, target="fast", latency_p50_ms=200.0),
        result_row(1, target="slow"),
        result_row(2, target="fast", operations=5, latency_p50_ms=900.0, latency_p90_ms=950.0),
    ]
    rows[2] |= {"latency_p95_ms": 990.0, "latency_p99_ms": 995.0, "latency_max_ms": 999.0}
    c = compare(results_frame(rows), "chat", CompareWeights(), MIN)
    assert c.fastest == "fast"
    table = {r["target"]: r for r in c.table.to_dicts()}
    assert (table["fast"]["run_id"], table["fast"]["operations"]) == ("run-000", 100)
    (note,) = c.passed_over
    assert note.sentence() == (
        "chat @ fast: run run-002 measured 5 requests, below [compare] min_requests = 20: "
        "using run-000"
    )
    smoke_counts = compare(results_frame(rows), "chat", CompareWeights(), 5)
    assert smoke_counts.fastest == "slow" and not smoke_counts.passed_over


def test_selection_keeps_the_latest_settings_and_skips_partial_runs() -> None:
    rows = [
        result_row(0, target="a", concurrency=8),  # other settings: never used
        result_row(1, target="a", concurrency=4),  # used
        result_row(2, target="a", concurrency=8, run_status="interrupted"),
        result_row(3, target="a", concurrency=4, operations=3),
        result_row(4, target="b", operations=10),  # no run of b qualifies
        result_row(5, target="b", operations=12, run_status="completed"),
    ]
    selection = select_runs(results_frame(rows), ("scenario", "target"), 20)
    assert selection.chosen["run_id"].to_list() == ["run-001"]
    a, b = selection.passed_over
    assert a.used_run_id == "run-001" and a.reasons == (
        "run run-003 measured 3 requests, below [compare] min_requests = 20",
        "run run-002 is interrupted",
    )
    assert b.used_run_id is None and b.sentence().endswith("no run qualifies, left out")
    later = [*rows, result_row(6, target="a", concurrency=8)]
    moved = select_runs(results_frame(later), ("scenario", "target"), 20)
    assert moved.chosen["run_id"].to_list() == ["run-006"]  # the latest settings are 8 now


def test_a_run_where_everything_failed_is_used_and_scores_zero() -> None:
    """Failed attempts count toward min_requests: a target that broke is shown broken, not
    on its last good run."""
    broken = result_row(1, target="b", successful=0, failed=100, error_rate=1.0)
    broken |= {f"latency_{q}_ms": None for q in ("p50", "p90", "p95", "p99", "p999")}
    broken |= {"output_tokens": 0, "error_server_error": 100}
    rows = [result_row(0, target="a"), result_row(-1, target="b"), broken]
    c = compare(results_frame(rows), "chat", CompareWeights(), MIN)
    table = {r["target"]: r for r in c.table.to_dicts()}
    assert table["b"]["run_id"] == "run-001" and table["b"]["score"] == 0.0
    assert c.cost_included and c.fastest == "a" and c.most_reliable == "a"


def test_the_cli_says_which_run_it_used_in_a_real_process(tmp_path: Path) -> None:
    """Real events (written through the event log), the real aggregate, `compare` in its own
    process: the table and --json carry the run and its request count, and the smoke test is
    named as passed over; `[compare] min_requests` moves the choice."""
    data = tmp_path / "data"
    log = EventLog(data)
    start = eventgen.EPOCH
    write_runs(
        log,
        [
            RunSpec("full", target="fast", requests=200, error_rate=0.0, ttft_ms=40.0),
            RunSpec("other", target="slow", requests=200, error_rate=0.0, ttft_ms=80.0, seed=1),
            RunSpec(
                "smoke",
                target="fast",
                requests=5,
                warmup=0,
                error_rate=0.0,
                ttft_ms=400.0,
                seed=2,
                start=start + timedelta(minutes=5),
            ),
        ],
    )
    assert run_pipeline("-q", "--data-dir", "data", "aggregate", cwd=tmp_path).returncode == 0
    text = run_pipeline("--data-dir", "data", "compare", cwd=tmp_path, env={"COLUMNS": "200"})
    assert text.returncode == 0, text.stderr
    assert "fastest: fast" in text.stdout
    assert (
        "chat @ fast: run smoke measured 5 requests, below [compare] min_requests = 20: using full"
        in text.stdout
    )
    header = next(line for line in text.stdout.splitlines() if line.startswith("target"))
    assert header.split()[:4] == ["target", "run_id", "operations", "successful"]
    (out,) = json.loads(
        run_pipeline("--data-dir", "data", "compare", "--json", cwd=tmp_path).stdout
    )
    used = {t["target"]: (t["run_id"], t["operations"]) for t in out["targets"]}
    assert used == {"fast": ("full", 198), "slow": ("other", 198)}
    assert out["passed_over"][0]["used_run_id"] == "full" and out["min_requests"] == 20
    (tmp_path / "pipeline.toml").write_text(
        '[[targets]]\nname = "fast"\nprovider = "mock"\nmodel = "m"\n\n[compare]\nmin_requests = 5\n'
    )
    (small,) = json.loads(
        run_pipeline("--data-dir", "data", "compare", "--json", cwd=tmp_path).stdout
    )
    assert small["fastest"] == "slow" and small["passed_over"] == []


def test_min_requests_is_checked_like_every_setting(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        '[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "m"\n\n[compare]\nmin_requests = 0\n'
    )
    write_results(tmp_path / "data", three_targets())
    result = cli(
        "--config", str(tmp_path / "bad.toml"), "--data-dir", str(tmp_path / "data"), "compare"
    )
    assert result.code == 2
    assert "compare.min_requests: Input should be greater than or equal to 1" in result.err


def _judged(index: int, target: str, attainment: float, met: bool, goodput: float) -> Any:
    return result_row(
        index,
        target=target,
        slo="ttft≤500ms",
        slo_attainment_target=0.95,
        slo_ttft_ms=500.0,
        slo_good=round(attainment * 100),
        slo_attainment=attainment,
        slo_ttft_attainment=attainment,
        goodput_rps=goodput,
        slo_met=met,
    )


def test_compare_says_who_meets_the_slo(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = [
        _judged(0, "alpha", 0.8, False, 8.0),
        _judged(1, "beta", 0.9996, True, 9.996),
        result_row(2, target="gamma"),  # aggregated without an SLO: not named in the sentence
    ]
    write_results(data, rows)
    text = cli("--data-dir", str(data), "compare").out
    assert (
        "SLO ttft≤500ms at 95.0%: beta meets it (99.9% of attempts, 9.996 req/s); "
        "alpha misses it (80.0% of attempts, 8 req/s)"
    ) in text
    assert "slo_attainment" in text and "goodput_rps" in text
    out = json.loads(cli("--data-dir", str(data), "compare", "--json").out)
    assert out[0]["slo"].startswith("SLO ttft≤500ms at 95.0%: beta meets it")
    by_target = {t["target"]: t for t in out[0]["targets"]}
    assert by_target["alpha"]["slo_met"] is False and by_target["gamma"]["slo"] is None
    # Different SLOs on the targets' runs are said to compare unlike.
    rows[0] |= {"slo": "ttft≤1s"}
    write_results(data, rows)
    text = cli("--data-dir", str(data), "compare").out
    assert "SLO (not the same for every target: compare with care): beta meets it" in text


def test_compare_without_any_slo_shows_no_slo_columns(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_results(data, three_targets())
    text = cli("--data-dir", str(data), "compare").out
    assert "slo_attainment" not in text and "SLO" not in text
    assert json.loads(cli("--data-dir", str(data), "compare", "--json").out)[0]["slo"] is None
