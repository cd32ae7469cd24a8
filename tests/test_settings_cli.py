"""The config's [trends] and [recommend] tables reach every command that uses them.

Each test runs the real CLI on real files twice, once with a config that leaves the table out and
once with a config that sets it, on data where the setting decides the outcome: a command that
fell back to the defaults would give the same answer both times and fail here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.store.eventlog import EventLog
from tests.conftest import CliResult
from tests.eventgen import slowing_history, write_runs
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
