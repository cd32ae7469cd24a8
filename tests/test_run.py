"""`pipeline run`: the four stages in order for cron, one JSON summary, and the regression gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipeline.store.eventlog import EventLog
from tests.conftest import CliResult
from tests.eventgen import RunSpec, slowing_history, write_runs

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


def test_run_stops_at_the_first_failed_stage_and_exits_with_its_code(
    cli: Run, tmp_path: Path
) -> None:
    """Results built from one earlier run; a second one, not aggregated yet, left a truncated
    event file. Execute appends beside it and succeeds, aggregate (incremental: it reads the
    runs not yet in its output) refuses the file with exit 1 (`run` has no --skip-corrupt), and
    profile and recommend, which could have built their outputs from the results, never run."""
    data = tmp_path / "data"
    log = EventLog(data)
    write_runs(log, [RunSpec("old-1", requests=20)])
    assert cli("-q", "--data-dir", str(data), "aggregate").code == 0
    results = (data / "results/benchmark_results.parquet").read_bytes()
    write_runs(log, [RunSpec("old-2", requests=20)])
    (bad,) = log.files("requests", run_ids=["old-2"])
    bad.path.write_bytes(bad.path.read_bytes()[:-40])  # the footer is gone
    result = cli("-q", "--data-dir", str(data), "run", "--requests", "4", "--seed", "1")
    assert result.code == 1
    assert result.err.startswith("error: ") and bad.path.name in result.err
    assert len(log.files("requests")) > 1  # execute ran and wrote its events
    assert (data / "results/benchmark_results.parquet").read_bytes() == results
    assert not (data / "profiles").exists() and not (data / "recommendations").exists()
    # The first stage's own failure: bad input is 2, and nothing at all is written.
    other = tmp_path / "other"
    refused = cli("-q", "--data-dir", str(other), "run", "--target", "nope", "--json")
    assert refused.code == 2 and "nope" in refused.err and refused.out == ""
    assert not other.exists()
