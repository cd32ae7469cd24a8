"""profile: trends over run histories, written through the real stage, and the regression gate."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from schemas import TrendSettings
from stages.profile.run import run_profile
from stages.profile.transform import profile, to_performance_profile
from tests.conftest import CliResult, run_pipeline
from tests.results_factory import result_row, results_frame, write_results

Run = Callable[..., CliResult]


def history(latencies: list[float], **overrides: object) -> list[dict[str, object]]:
    return [result_row(i, latency_mean_ms=v, **overrides) for i, v in enumerate(latencies)]


def noisy(n: int, drift: float = 0.0, seed: int = 7, step_at: int | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    values = 400.0 * (1 + drift) ** np.arange(n) * rng.lognormal(0, 0.03, n)
    if step_at is not None:
        values[step_at:] *= 1.3
    return [float(v) for v in values]


def only(frame: pl.DataFrame) -> dict[str, Any]:
    assert frame.height == 1
    return frame.row(0, named=True)


def test_a_steady_latency_climb_is_degrading_with_high_confidence() -> None:
    row = only(profile(results_frame(history(noisy(10, drift=0.03))).lazy(), TrendSettings()))
    assert row["latency_trend"] == "degrading"
    assert row["latency_relative_change"] > 0.2
    assert row["latency_confidence"] >= 0.99
    assert row["regression"] and "latency degrading" in row["regression_reasons"]
    assert row["throughput_trend"] == "stable" and row["data_points"] == 10


def test_a_flat_history_is_stable_and_two_runs_are_insufficient() -> None:
    flat = only(profile(results_frame(history(noisy(10))).lazy(), TrendSettings()))
    assert flat["latency_trend"] == "stable" and not flat["regression"]
    two = only(profile(results_frame(history([400.0, 800.0])).lazy(), TrendSettings()))
    assert two["latency_trend"] == "insufficient_data" and two["data_points"] == 2
    assert to_performance_profile(two).trend_analysis is None


def test_a_step_is_found_at_the_run_where_it_happened() -> None:
    row = only(profile(results_frame(history(noisy(12, step_at=6))).lazy(), TrendSettings()))
    assert row["latency_change_point_run_id"] == "run-006"
    assert row["latency_change_point_direction"] == "degrading"
    assert row["latency_change_point_relative_change"] == pytest.approx(0.3, abs=0.08)
    assert row["regression"]


def test_falling_latency_is_improving_and_not_a_regression() -> None:
    row = only(profile(results_frame(history(noisy(10, drift=-0.04))).lazy(), TrendSettings()))
    assert row["latency_trend"] == "improving" and not row["regression"]


def test_runs_at_another_concurrency_or_interrupted_are_left_out() -> None:
    rows = history(noisy(6))
    rows.append(result_row(6, latency_mean_ms=5000.0, concurrency=64))  # a sweep point, not a trend
    rows.append(result_row(7, latency_mean_ms=5000.0, run_status="interrupted"))
    rows.append(result_row(8, latency_mean_ms=401.0))
    row = only(profile(results_frame(rows).lazy(), TrendSettings()))
    assert row["latency_trend"] == "stable"
    assert (row["data_points"], row["runs_excluded"], row["latest_run_id"]) == (7, 1, "run-008")


def test_each_target_and_scenario_gets_its_own_row_that_validates() -> None:
    rows = history(noisy(5)) + [
        result_row(i, target="beta", provider="anthropic") for i in range(5)
    ]
    frame = profile(results_frame(rows).lazy(), TrendSettings())
    assert sorted(frame["target"].to_list()) == ["alpha", "beta"]
    for row in frame.iter_rows(named=True):
        item = to_performance_profile(row)
        assert item.trend_analysis is not None and item.trend_analysis.data_points == 5
        assert item.created_at <= item.updated_at


def test_cost_efficiency_is_null_safe_when_the_price_is_unknown() -> None:
    rows = [result_row(i, price_input_per_mtok=None, price_output_per_mtok=None) for i in range(5)]
    row = only(profile(results_frame(rows).lazy(), TrendSettings()))
    assert row["latest_cost_efficiency"] is None
    assert row["cost_efficiency_trend"] == "insufficient_data"


def test_thresholds_come_from_the_settings() -> None:
    rows = history(noisy(10, drift=0.03))
    strict = only(profile(results_frame(rows).lazy(), TrendSettings(min_change=5.0)))
    assert strict["latency_trend"] == "stable"


def test_the_stage_writes_identical_bytes_twice(data_dir: Path) -> None:
    write_results(data_dir, history(noisy(8, drift=0.03)))
    first = run_profile(data_dir, TrendSettings())
    before = Path(first.path).read_bytes()
    run_profile(data_dir, TrendSettings())
    assert Path(first.path).read_bytes() == before
    assert first.regressions.height == 1


def test_another_process_writes_the_same_profile_file_from_the_same_results(
    tmp_path: Path,
) -> None:
    """What a user relies on when a cron job on another machine rebuilds the profiles: the same
    results give the same file, byte for byte, from a fresh `pipeline profile` process with
    another hash seed (set and dict order, a clock or an unseeded draw anywhere in the trend
    statistics or the row order would show here), and the file says what the histories say."""
    rows = [
        *history(noisy(8, drift=0.03)),
        *history(noisy(10, seed=3, step_at=5), target="beta"),
        *history(noisy(6, seed=5), target="gamma", scenario="tools"),
    ]
    here, there = tmp_path / "here", tmp_path / "there"
    write_results(here, rows)
    write_results(there, rows)
    mine = run_profile(here, TrendSettings())
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    done = run_pipeline(
        "--data-dir", str(there), "profile", cwd=tmp_path, env={"PYTHONHASHSEED": seed}
    )
    assert done.returncode == 0, done.stderr
    theirs = there / "profiles/performance_profiles.parquet"
    assert theirs.read_bytes() == Path(mine.path).read_bytes()
    by_target = {r["target"]: r for r in mine.profiles.to_dicts()}
    assert by_target["alpha"]["latency_trend"] == "degrading"
    assert by_target["beta"]["latency_change_point_run_id"] == "run-005"
    assert by_target["gamma"]["latency_trend"] == "stable"


def test_the_gate_exits_3_after_writing_and_0_when_healthy(cli: Run, tmp_path: Path) -> None:
    bad, good = tmp_path / "bad", tmp_path / "good"
    write_results(bad, history(noisy(8, drift=0.03)))
    write_results(good, history(noisy(8)))
    result = cli("--data-dir", str(bad), "profile", "--fail-on-regression")
    assert result.code == 3
    assert (bad / "profiles/performance_profiles.parquet").exists()
    assert "REGRESSION chat @ alpha: latency degrading" in result.err
    assert cli("--data-dir", str(bad), "profile").code == 0  # no gate without the flag
    result = cli("--data-dir", str(good), "profile", "--fail-on-regression", "--json")
    assert result.code == 0 and json.loads(result.out)["regressions"] == 0


def test_profile_without_results_says_what_to_run(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = cli("--data-dir", str(tmp_path / "empty"), "profile")
    assert result.code == 1 and "run `pipeline aggregate` first" in result.err


@pytest.mark.parametrize(
    "command",
    [["aggregate"], ["profile"], ["recommend"], ["compare"], ["report", "--out", "r.html"]]
    + [["compact"], ["archive", "--older-than", "1"], ["events"]],
    ids=lambda c: c[0],
)
def test_a_mistyped_data_dir_is_said_and_never_created(
    cli: Run, tmp_path: Path, command: list[str]
) -> None:
    """A derived stage, housekeeping or a query on a data directory that is not there says so
    (exit 2) instead of "succeeding" with empty outputs in a folder it made."""
    typo = tmp_path / "dta"
    result = cli("--data-dir", str(typo), *command)
    assert result.code == 2 and str(typo) in result.err, result.err
    assert "is --data-dir right?" in result.err and not typo.exists()


def test_aggregate_with_no_events_says_so(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = cli("--data-dir", str(tmp_path / "data"), "aggregate")
    assert result.code == 2 and "no events under" in result.err
    assert not (tmp_path / "data" / "results").exists()


def test_a_history_of_events_through_the_real_stages(cli: Run, tmp_path: Path) -> None:
    """Eight daily runs whose TTFT creeps up: events → aggregate → profile → recommend → gate."""
    from pipeline.store.eventlog import EventLog
    from tests.eventgen import slowing_history, write_runs

    data = tmp_path / "data"
    specs = slowing_history(8, growth=1.08)
    write_runs(EventLog(data), specs)
    assert cli("--data-dir", str(data), "aggregate").code == 0
    result = cli("--data-dir", str(data), "profile", "--fail-on-regression", "--json")
    assert result.code == 3
    (row,) = json.loads(result.out)["profiles"]
    assert (row["data_points"], row["latency_trend"]) == (8, "degrading")
    assert "latency degrading" in row["regression_reasons"]
    recs = json.loads(cli("--data-dir", str(data), "recommend", "--json").out)["recommendations"]
    assert recs[0]["rule_id"] == "trend-degrading"
