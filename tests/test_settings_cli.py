"""The config's [trends] table reaches every command that uses them.

Each test runs the real CLI on real files twice, once with a config that leaves the table out and
once with a config that sets it, on data where the setting decides the outcome: a command that
fell back to the defaults would give the same answer both times and fail here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult
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
