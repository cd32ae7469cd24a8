"""How trends and the numbers behind decisions are printed: a change point beside every trend,
and no number rounded across its threshold (profile's and run's tables, recommendations.md)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pipeline.store.eventlog import EventLog
from stages.profile.display import (
    confidence_shown,
    confidence_text,
    p_value_shown,
    p_value_text,
    trend_text,
)
from tests.conftest import run_pipeline
from tests.eventgen import EPOCH, RunSpec, write_runs


def test_the_issue_examples() -> None:
    assert confidence_text(0.9876, 0.99) == "0.987"  # not "0.99", which would pass 0.99
    assert confidence_text(0.99, 0.99) == "0.990"
    assert confidence_text(0.99994, 0.9999) == "0.9999"  # as many decimals as the threshold
    assert confidence_text(0.99989, 0.9999) == "0.9998"
    assert p_value_text(0.0504, 0.05) == "0.051"  # not "0.05", which would pass 0.05
    assert p_value_text(7.631587e-08, 0.05) == "7.7e-08"
    assert p_value_text(0.05, 0.05) == "0.05"


thresholds = st.integers(1, 10**6).map(lambda k: k / 10**6)


@given(value=st.floats(0.0, 1.0), threshold=thresholds)
def test_a_shown_confidence_passes_its_threshold_exactly_when_the_value_does(
    value: float, threshold: float
) -> None:
    shown = confidence_shown(value, threshold)
    assert shown <= value
    assert (shown >= threshold) == (value >= threshold)
    assert float(confidence_text(value, threshold)) == shown


@given(value=st.floats(1e-300, 1.0), level=thresholds)
def test_a_shown_p_value_passes_its_level_exactly_when_the_value_does(
    value: float, level: float
) -> None:
    shown = p_value_shown(value, level)
    assert shown >= value
    assert (shown <= level) == (value <= level)
    assert float(p_value_text(value, level)) == shown


def test_a_trend_is_never_shown_without_its_change_point() -> None:
    row = {
        "latency_trend": "stable",
        "latency_relative_change": 0.44,
        "latency_confidence": 0.98447,
        "latency_change_point_run_id": "r7",
        "latency_change_point_relative_change": 0.393,
        "latency_change_point_p": 5.246e-10,
    }
    assert trend_text(row, "latency") == "stable, step +39.3% at r7"
    assert trend_text(row, "latency", numbers=True) == (
        "stable (confidence 0.984), step +39.3% at r7 (p = 5.3e-10)"
    )
    assert trend_text({**row, "latency_trend": "degrading"}, "latency").startswith(
        "degrading +44.0%, step"
    )
    assert trend_text({}, "latency") == "insufficient_data"


def _step_history(data: Path) -> None:
    """Twelve daily runs of chat@mock-fast whose TTFT and token gaps step up 40% at run r7."""
    write_runs(
        EventLog(data),
        [
            RunSpec(
                f"r{i}",
                requests=120,
                error_rate=0.0,
                ttft_ms=40.0 * (1.4 if i >= 7 else 1.0),
                itl_ms=8.0 * (1.4 if i >= 7 else 1.0),
                seed=i,
                start=EPOCH + timedelta(days=i),
            )
            for i in range(12)
        ],
    )


WIDE = {"COLUMNS": "250"}
"""Wide enough for the profile table on one line a row (at 80 columns it is stacked)."""


def _row(stdout: str, target: str) -> list[str]:
    """The table's cells of `target`'s row (plain text: columns two spaces apart)."""
    line = next(line for line in stdout.splitlines() if f"  {target}  " in line)
    return re.split(r" {2,}", line.strip())


def test_the_profile_table_shows_the_step_that_fails_the_gate(tmp_path: Path) -> None:
    """The issue's case in a real process: exit 3 for "latency stepped +43.0%" while the table
    said "stable". The table now says where the level stepped and that the row is a
    regression; the confidence under a threshold of 0.6568 is 0.6567.., printed 0.6567 (the
    old table printed 0.6568, a pass)."""
    _step_history(tmp_path / "data")
    assert run_pipeline("-q", "--data-dir", "data", "aggregate", cwd=tmp_path).returncode == 0
    proc = run_pipeline(
        "--data-dir", "data", "profile", "--fail-on-regression", cwd=tmp_path, env=WIDE
    )
    assert proc.returncode == 3
    assert "REGRESSION chat @ mock-fast: latency stepped +43.0% at run r7" in proc.stderr
    cells = _row(proc.stdout, "mock-fast")
    assert cells[3:5] == ["stable, step +43.0% at r7", "stable, step -30.4% at r7"]
    assert cells[-1] == "yes"
    (tmp_path / "pipeline.toml").write_text(
        '[[targets]]\nname = "mock-fast"\nprovider = "mock"\nmodel = "mock-small"\n\n'
        "[trends]\nconfidence_threshold = 0.6568\n"
    )
    profiles = json.loads(
        run_pipeline("--data-dir", "data", "profile", "--json", cwd=tmp_path).stdout
    )["profiles"]
    assert 0.6567 < profiles[0]["overall_confidence"] < 0.6568
    shown = run_pipeline("--data-dir", "data", "profile", cwd=tmp_path, env=WIDE).stdout
    assert _row(shown, "mock-fast")[-2] == "0.6567"


def test_pipeline_run_shows_the_same_table(tmp_path: Path) -> None:
    """`pipeline run` (execute, aggregate, profile, recommend) prints profile's table: the
    step beside the trend there too, and the same exit 3 with --fail-on-regression."""
    _step_history(tmp_path / "data")
    proc = run_pipeline(
        "--data-dir",
        "data",
        "run",
        "--requests",
        "4",
        "--seed",
        "1",
        "--fail-on-regression",
        cwd=tmp_path,
        env=WIDE,
    )
    assert proc.returncode == 3, proc.stderr
    cells = _row(proc.stdout.split("profiles (")[1], "mock-fast")
    assert cells[0] == "chat" and cells[3] == "stable, step +43.0% at r7" and cells[-1] == "yes"
    text = (tmp_path / "data/recommendations/recommendations.md").read_text()
    assert "latency stable (confidence 0.977), step +43.0% at r7 (p = 1.8e-05)" in text
