"""`pipeline run`: the four stages in order for cron, one JSON summary, and the regression gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipeline.store.eventlog import EventLog
from tests.conftest import CliResult
from tests.eventgen import slowing_history, write_runs

Run = Callable[..., CliResult]


def test_run_builds_every_output_and_says_so_in_one_json(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = cli("-q", "--data-dir", str(data), "run", "--requests", "6", "--seed", "3", "--json")
    assert result.code == 0
    summary = json.loads(result.out)
    assert set(summary) == {"execute", "aggregate", "profile", "recommend", "exit_code"}
    run_id = summary["execute"]["run_id"]
    assert {r["run_id"] for r in summary["aggregate"]["rebuilt"]} == {run_id}
    for path in (
        "results/benchmark_results.parquet",
        "results/timeseries.parquet",
        "profiles/performance_profiles.parquet",
        "recommendations/recommendations.parquet",
        "recommendations/recommendations.md",
    ):
        assert (data / path).is_file(), path


def test_run_exits_3_on_a_regression_after_writing_everything(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    history = slowing_history(8, growth=1.1)
    write_runs(EventLog(data), history)  # a chat@mock-fast history that keeps getting slower
    args = ("-q", "--data-dir", str(data), "run", "--requests", "4", "--target", "mock-fast")
    result = cli(*args, "--fail-on-regression")
    assert result.code == 3
    assert "REGRESSION chat @ mock-fast" in result.err
    assert (data / "recommendations/recommendations.md").is_file()  # written before exiting 3
    assert "trend-degrading" in (data / "recommendations/recommendations.md").read_text()
    assert cli(*args).code == 0  # without the flag the same history is not an error
