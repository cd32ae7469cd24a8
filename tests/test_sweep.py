"""`pipeline sweep`: the series, the answer's definitions, and sweeps against the mock.

The end-to-end cases sweep the in-process mock, whose capacity follows from its knobs
(docs/mock.md, "What to expect"), and check the answer against that arithmetic: the knee at
the concurrency where the mock stops adding throughput, the highest load under the SLO where
the formula puts it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.store.eventlog import EventLog
from stages.aggregate.sweeps import SweepPoint, find_knee, max_load_under_slo
from stages.sweep.plan import (
    BisectSeries,
    ListSeries,
    StepOutcome,
    SweepOptions,
    SweepRateSeries,
)
from tests.conftest import ROOT, CliResult

Cli = Callable[..., CliResult]


def _config(tmp_path: Path, mock: str, scenario: str = "") -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
default_scenarios = ["chat"]
[[targets]]
name = "m"
provider = "mock"
model = "mock-m"
mock = {{ {mock} }}

[[scenarios]]
name = "chat"
test_prompts = ["hi"]
expected_operations = 8
concurrency_level = 8
max_tokens = 64
{scenario}
"""
    )
    return path


def _outcome(
    load: float,
    *,
    met: bool | None = None,
    status: str = "completed",
    errors: float = 0.0,
    throughput: float = 1.0,
) -> StepOutcome:
    return StepOutcome("concurrency", load, throughput, errors, None, met, status)


# --- the answer's definitions ---------------------------------------------------------------


def _points(loads: list[float], throughput: list[float], p50: list[float]) -> list[SweepPoint]:
    return [
        SweepPoint(c, f"r{i}", t, p)
        for i, (c, t, p) in enumerate(zip(loads, throughput, p50, strict=True))
    ]


def test_the_knee_is_the_last_load_before_latency_outgrows_throughput() -> None:
    # A server of capacity 4 in a closed loop: throughput min(c, 4), latency max(1, c/4).
    loads = [1.0, 2.0, 4.0, 8.0, 16.0]
    knee = find_knee(_points(loads, [min(c, 4) for c in loads], [max(1.0, c / 4) for c in loads]))
    assert knee is not None and knee.load == 4
    # Linear all the way: no knee; noise below KNEE_NOISE in latency is not one either.
    assert find_knee(_points(loads, loads, [1.0, 1.02, 1.0, 1.04, 1.03])) is None
    # A step where everything failed (no throughput) after latency grew is the knee.
    assert find_knee(_points([1, 2], [5.0, None], [1.0, 3.0])).load == 1  # type: ignore[list-item, union-attr]


@given(capacity=st.integers(1, 64), ratio=st.sampled_from([1.25, 1.5, 2.0, 3.0]))
def test_the_knee_of_a_capacity_limited_server_is_within_one_step(
    capacity: int, ratio: float
) -> None:
    """Geometric loads over a server that stops at `capacity`: the knee is the last load ≤ the
    capacity or the first above it (whatever the spacing), never further away."""
    loads = [1.0]
    while loads[-1] < capacity * 8:
        loads.append(round(loads[-1] * ratio, 6))
    knee = find_knee(
        _points(loads, [min(c, capacity) for c in loads], [max(1.0, c / capacity) for c in loads])
    )
    assert knee is not None
    below = max(c for c in loads if c <= capacity)
    above = min(c for c in loads if c >= capacity)
    assert knee.load in (below, above)


def test_max_load_under_slo_is_the_prefix_that_met_it() -> None:
    pts = [
        SweepPoint(c, f"r{c}", 1.0, 1.0, a) for c, a in [(1, 1.0), (2, 0.96), (4, 0.9), (8, 0.99)]
    ]
    best = max_load_under_slo(pts, 0.95)
    assert best is not None and best.load == 2  # 8 passing above a miss at 4 is noise
    assert max_load_under_slo(pts, None) is None
    assert max_load_under_slo(pts, 1.0) is not None and max_load_under_slo(pts, 1.0).load == 1  # type: ignore[union-attr]
    assert max_load_under_slo(pts[2:], 0.95) is None


# --- the series -----------------------------------------------------------------------------


def _play(series: Any, met: Callable[[float], bool]) -> list[float]:
    done: list[StepOutcome] = []
    while (chosen := series.next_load(done)) is not None:
        done.append(_outcome(chosen[1], met=met(chosen[1])))
        assert len(done) < 100
    return [s.load for s in done]


@given(limit=st.integers(0, 100))
@settings(max_examples=200)
def test_bisection_finds_the_highest_concurrency_under_the_slo(limit: int) -> None:
    loads = _play(BisectSeries(100, SweepOptions("chat", auto=True)), lambda c: c <= limit)
    assert len(loads) == len(set(loads))  # each load runs once
    assert len(loads) <= 15
    met = [c for c in loads if c <= limit]
    assert (max(met) if met else 0) == limit or (limit == 0 and loads == [1.0])
    if 0 < limit < 100:
        assert limit + 1 in loads  # the boundary was seen from both sides


def test_a_list_series_stops_past_a_threshold() -> None:
    series = ListSeries("concurrency", (1, 2, 4, 8), SweepOptions("chat", stop_at_errors=0.1))
    done = [_outcome(1), _outcome(2, errors=0.5)]
    assert series.next_load(done[:1]) == ("concurrency", 2)
    assert series.next_load(done) is None
    assert series.next_load([_outcome(1, status="interrupted")]) is None


def test_auto_rate_spreads_rates_up_to_the_measured_saturation() -> None:
    series = SweepRateSeries(8, 4, SweepOptions("chat", axis="rate", auto=True))
    assert series.next_load([]) == ("concurrency", 1.0)
    done = [_outcome(1, throughput=10.0)]
    assert series.next_load(done) == ("concurrency", 8.0)
    done.append(_outcome(8, throughput=50.0))
    rates = []
    while (chosen := series.next_load(done)) is not None:
        rates.append(chosen)
        done.append(StepOutcome("rate", chosen[1], chosen[1], 0.0, None, None, "completed"))
    assert rates == [("rate", 20.0), ("rate", 30.0), ("rate", 40.0), ("rate", 50.0)]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--concurrency", ""], "--concurrency"),
        (["--concurrency", "1,x"], "--concurrency"),
        (["--concurrency", "4,2"], "--concurrency: the loads must increase, but 2 follows 4"),
        (["--concurrency", "2,2"], "--concurrency: the loads must increase"),
        (["--concurrency", "1,200"], "--concurrency: 200 is not a whole number in 1..100"),
        (["--concurrency", "1.5"], "--concurrency: 1.5 is not a whole number"),
        (["--concurrency", "0,1"], "--concurrency: 0 is not a positive number"),
        (["--rate", "1,inf"], "--rate"),
        (["--rate", "1,1e9"], "--rate: 1e+09 requests/s is beyond what this client can drive"),
        (["--concurrency", "1", "--target", "nope"], "unknown target 'nope'"),
        (["--concurrency", "1", "--rate", "1"], "exactly one of"),
        ([], "exactly one of"),
        (["--auto", "concurrency"], "--auto concurrency: bisects on the SLO, so it needs one"),
        (["--concurrency", "1", "--slo", "ttft=0s"], "--slo.ttft"),
        (["--concurrency", "1", "--slo", "nonsense"], "expected key=value pairs"),
        (["--concurrency", "1", "--stop-at-attainment", "0.9"], "--stop-at-attainment: needs"),
        (["--rate", "10,100", "--duration", "7d"], "command line: chat.duration: rate × duration"),
        (["--concurrency", "1", "--requests", "20000000"], "chat.expected_operations"),
        (["--auto", "rate", "--steps", "0"], "--steps"),
    ],
)
def test_bad_input_is_exit_2_naming_the_option(
    cli: Cli, tmp_path: Path, args: list[str], named: str
) -> None:
    _config(tmp_path, "simulated_latency = 0")
    data = tmp_path / "data"
    result = cli("--data-dir", str(data), "sweep", "chat", *args)
    assert result.code == 2, result
    assert named in result.err, result.err
    assert "Traceback" not in result.err
    assert not (data / "events").exists()  # nothing was sent


def test_a_rate_beyond_the_client_says_the_measured_figure(cli: Cli, tmp_path: Path) -> None:
    _config(tmp_path, "simulated_latency = 0")
    result = cli("sweep", "chat", "--rate", "10,100000")
    assert result.code == 2
    # 1 core (the in-process mock shares the client's process) at 450 + 1 × 55 µs a request.
    assert "at most 1980 requests/s on 1 core" in result.err, result.err


def test_an_unknown_scenario_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    _config(tmp_path, "simulated_latency = 0")
    result = cli("sweep", "nope", "--concurrency", "1")
    assert result.code == 2 and "unknown scenario 'nope'" in result.err, result


def test_a_concurrency_beyond_the_client_says_the_expected_cpu(cli: Cli, tmp_path: Path) -> None:
    # 100 streams of 100,000 tokens at 100 chunks/s: 0.1 req/s × 5.5 s of CPU each = 0.55 cores
    # is fine; of 20 tokens, 500 req/s × 1.66 ms = 0.83; of 1 token, 10,000 req/s × 615 µs = 6.2.
    _config(tmp_path, "simulated_latency = 0", scenario="streaming_required = true")
    path = tmp_path / "pipeline.toml"
    path.write_text(path.read_text().replace("max_tokens = 64", "max_tokens = 1"))
    result = cli("sweep", "chat", "--concurrency", "1,100")
    assert result.code == 2
    assert "--concurrency: 100 in flight is beyond what this client can drive" in result.err
    assert "expects 6.2 cores" in result.err and "can use 1" in result.err


def test_a_closed_loop_sweep_of_an_open_loop_scenario_is_refused(cli: Cli, tmp_path: Path) -> None:
    _config(tmp_path, "simulated_latency = 0", scenario="rate = 5.0")
    result = cli("sweep", "chat", "--concurrency", "1,2")
    assert result.code == 2
    assert "--concurrency: --concurrency run a closed loop" in result.err


# --- against the mock -----------------------------------------------------------------------


def _sweep_json(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("sweep", "chat", "--json", "--seed", "1", *args)
    assert result.code == 0, result
    return dict(json.loads(result.out))


def test_a_sweep_finds_the_knee_of_a_queueing_mock(cli: Cli, tmp_path: Path) -> None:
    """A mock serving 4 at a time (the rest queue) with a fixed 20 ms service: throughput is
    min(c, 4) / 20 ms and latency max(1, c/4) × 20 ms, so the knee is at exactly 4."""
    _config(
        tmp_path,
        'simulated_latency = "10ms", token_generation_rate = 1000, response_variability = 0, '
        "concurrency_limit = 4, output_tokens = 11",
    )
    out = _sweep_json(cli, "--concurrency", "1,2,4,8,16", "--requests", "32")
    (answer,) = out["answers"]
    assert answer["knee_load"] == 4
    assert answer["axis"] == "concurrency" and answer["steps"] == 5
    assert answer["max_load_under_slo"] is None and answer["slo"] is None
    # Throughput at the knee: 4 per 20 ms = 200 req/s, less the client's own time (40% spare).
    assert 120 <= answer["knee_throughput_rps"] <= 205
    # Every step is an ordinary run, tagged.
    runs = EventLog(tmp_path / "data").replay("runs").collect()
    tagged = runs.filter(pl.col("kind") == "started").sort("sweep_step")
    assert tagged.get_column("sweep_id").unique().to_list() == [out["sweep_id"]]
    assert tagged.get_column("sweep_load").to_list() == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert tagged.get_column("concurrency").to_list() == [1, 2, 4, 8, 16]
    # The answer is re-derived by aggregate, byte for byte.
    sweeps = tmp_path / "data" / "results" / "sweeps.parquet"
    before = sweeps.read_bytes()
    assert cli("aggregate", "--full").code == 0
    assert sweeps.read_bytes() == before
    assert pl.read_parquet(sweeps).get_column("knee_load").to_list() == [4.0]


def test_a_sweep_finds_the_knee_of_the_saturating_mock(cli: Cli, tmp_path: Path) -> None:
    """`batch_capacity` N = 4: up to 4 in flight each request takes t + (n−1)·g = 5 + 10·2 =
    25 ms; past it the gaps stretch by c/N (docs/mock.md), so latency grows as fast as c and
    throughput stays at N / ((n−1)·g) = 200 req/s: the knee is at N = 4."""
    _config(
        tmp_path,
        'simulated_latency = "5ms", token_generation_rate = 500, response_variability = 0, '
        "batch_capacity = 4, concurrency_limit = 64, output_tokens = 11",
    )
    out = _sweep_json(cli, "--concurrency", "1,2,4,8,16", "--requests", "32")
    (answer,) = out["answers"]
    assert answer["knee_load"] == 4
    # c = 16: gaps × 4, latency 5 + 10 × 8 = 85 ms: p50 within 30% above (a late loop).
    last = out["steps"][-1]
    assert 85 <= last["latency_p50_ms"] <= 110


def test_ctrl_c_leaves_the_finished_steps(tmp_path: Path) -> None:
    """SIGINT during a step: exit 130, the finished steps' results and answer stay, the cut
    step is recorded as interrupted and left out of the answer."""
    _config(
        tmp_path,
        'simulated_latency = "20ms", token_generation_rate = 1000, response_variability = 0, '
        "output_tokens = 2",
    )
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--data-dir",
            str(data),
            "sweep",
            "chat",
            "--concurrency",
            "1,2,4",
            "--requests",
            "100000",
            "--duration",
            "0.6s",
            "--seed",
            "3",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sweeps = data / "results" / "sweeps.parquet"
    deadline = time.monotonic() + 60
    while not (sweeps.exists() and pl.read_parquet(sweeps).get_column("steps").to_list() == [2]):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.3)  # into step 2's 0.6 s of requests
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    runs = EventLog(data).replay("runs").collect().filter(pl.col("kind") == "finished")
    statuses = dict(zip(runs["sweep_step"].to_list(), runs["status"].to_list(), strict=True))
    assert statuses[0] == statuses[1] == "completed"
    assert statuses.get(2, "interrupted") == "interrupted"
    subprocess.run(
        [sys.executable, "-m", "pipeline", "--data-dir", str(data), "aggregate"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    (answer,) = pl.read_parquet(sweeps).to_dicts()
    assert answer["loads"] == [1.0, 2.0]
    assert answer["steps_excluded"] == (1 if 2 in statuses else 0)


def test_auto_concurrency_finds_the_highest_load_under_the_slo(cli: Cli, tmp_path: Path) -> None:
    """The saturating mock with N = 2, g = 5 ms, t = 10 ms, n = 11 tokens: past N each gap is
    g·c/N, so TPOT ≤ 13.75 ms holds up to c = N·P/g = 5.5 (docs/mock.md): the bisection must
    answer exactly 5 (TPOT 12.5 ms there, 15 ms at 6: 9% either side of the threshold; an
    attainment of 0.8 lets a loaded machine stall a few requests), with a goodput there of
    c / (t + (n−1)·g·c/N) = 5 / 135 ms = 37 req/s (within 20%), and the knee at N = 2 (p50
    latency 60 → 110 ms from 2 to 4 grows faster than √2)."""
    _config(
        tmp_path,
        'simulated_latency = "10ms", token_generation_rate = 200, response_variability = 0, '
        "batch_capacity = 2, concurrency_limit = 64, output_tokens = 11",
        scenario="streaming_required = true",  # TPOT needs a first token apart from the last
    )
    slo = "tpot=13.75ms,attainment=0.8"
    out = _sweep_json(
        cli, "--auto", "concurrency", "--slo", slo, "--requests", "100000", "--duration", "0.5s"
    )
    (answer,) = out["answers"]
    loads = [s["load"] for s in out["steps"]]
    assert loads == [1, 2, 4, 8, 6, 5], out["steps"]
    assert answer["max_load_under_slo"] == 5
    assert answer["slo"] == "tpot≤13750us" and answer["slo_target_attainment"] == 0.8
    assert answer["attainment_at_max"] >= 0.8
    assert 29 <= answer["goodput_at_max_rps"] <= 45
    assert answer["knee_load"] == 2
    # Judged again by aggregate with the same --slo: the same answer, byte for byte.
    sweeps = tmp_path / "data" / "results" / "sweeps.parquet"
    before = sweeps.read_bytes()
    assert cli("aggregate", "--full", "--slo", slo).code == 0
    assert sweeps.read_bytes() == before
    # A plain aggregate (a cron's; the config's scenario has no slo): the SLO recorded with the
    # steps judges them, and the answer stays.
    assert cli("aggregate", "--full").code == 0
    assert sweeps.read_bytes() == before
    # A looser SLO, and no new request: the answer moves where the formula puts it (c ≤ 6.6
    # for 16.5 ms: 6 is the highest load swept under it, 8 misses it at 20 ms).
    assert cli("aggregate", "--full", "--slo", "tpot=16.5ms,attainment=0.8").code == 0
    assert pl.read_parquet(sweeps)["max_load_under_slo"].to_list() == [6.0]


# --- profile: the answer trended across sweeps, and the gate ----------------------------------


def _history(capacities: list[int]) -> list[dict[str, Any]]:
    """Ten steady daily runs, and one weekly sweep per capacity (loads 1..16 doubling; a step
    meets the TPOT SLO when its load is at most the capacity)."""
    from datetime import timedelta

    from tests.results_factory import BASE_TIME, result_row

    rows = [result_row(i) for i in range(10)]
    for week, capacity in enumerate(capacities):
        for step, load in enumerate([1, 2, 4, 6, 8, 10, 12, 14, 16]):
            met = load <= capacity
            rows.append(
                result_row(
                    100 + week * 10 + step,
                    run_id=f"sweep{week}-step{step}",
                    timestamp=BASE_TIME + timedelta(days=7 * week, hours=1, minutes=step),
                    concurrency=load,
                    throughput_rps=10.0 * min(load, capacity),
                    latency_mean_ms=400.0 * max(1.0, load / capacity),
                    latency_p50_ms=400.0 * max(1.0, load / capacity),
                    slo_latency_ms=600.0,
                    sweep_id=f"sweep-{week}",
                    sweep_step=step,
                    sweep_axis="concurrency",
                    sweep_load=float(load),
                    slo="latency≤600ms",
                    slo_attainment_target=0.95,
                    slo_attainment=1.0 if met else 0.5,
                    goodput_rps=10.0 * min(load, capacity) * (1.0 if met else 0.5),
                    slo_met=met,
                )
            )
    return rows


@pytest.mark.parametrize(
    ("capacities", "code"), [([16, 14, 12, 10, 8, 6], 3), ([10, 10, 12, 10, 10, 12], 0)]
)
def test_profile_trends_the_capacity_under_slo_and_gates_on_it(
    cli: Cli, tmp_path: Path, capacities: list[int], code: int
) -> None:
    from tests.results_factory import write_results

    data = tmp_path / "data"
    write_results(data, _history(capacities))
    result = cli("--data-dir", str(data), "profile", "--fail-on-regression", "--json")
    assert result.code == code, result
    (row,) = json.loads(result.out)["profiles"]
    assert row["sweeps"] == 6 and row["latest_capacity"] == capacities[-1]
    assert row["capacity_slo"] == "latency≤600ms" and row["capacity_axis"] == "concurrency"
    # The sweeps' steps stay out of the daily runs' trends (60 steps at other concurrencies).
    assert row["data_points"] == 10 and row["latency_trend"] == "stable"
    if code:
        assert row["capacity_trend"] == "degrading"
        assert "capacity under SLO degrading -" in row["regression_reasons"]
        assert "over 6 sweeps" in row["regression_reasons"]
        table = cli("--data-dir", str(data), "profile", "--fail-on-regression")
        assert table.code == 3
        assert "REGRESSION chat @ alpha: capacity under SLO degrading" in table.err
        assert "capacity_trend" in table.out.replace("\n", " ") or "degrading" in table.out
    else:
        assert row["capacity_trend"] == "stable" and not row["regression"]


def test_recommend_and_report_give_the_latest_sweeps_answer(cli: Cli, tmp_path: Path) -> None:
    from tests.results_factory import write_results

    data = tmp_path / "data"
    write_results(data, _history([16, 14, 12, 10, 8, 6]))
    assert cli("--data-dir", str(data), "profile").code == 0
    assert cli("--data-dir", str(data), "recommend").code == 0
    recs = pl.read_parquet(data / "recommendations" / "recommendations.parquet").to_dicts()
    (rec,) = [r for r in recs if r["rule_id"] == "sweep-capacity"]
    assert rec["title"] == "alpha holds its SLO on chat up to 6 in flight"
    assert "100.0% of attempts met latency≤600ms (95.0% needed)" in rec["description"]
    assert "the next load swept missed it" in rec["description"]
    assert "knee of its throughput-latency curve is at 6 in flight" in rec["description"]
    assert json.loads(rec["evidence"])["sweep_id"] == "sweep-5"
    # The shrinking capacity is a regression too, named in trend-degrading.
    assert any(r["rule_id"] == "trend-degrading" and "capacity" in r["title"] for r in recs)
    # No slo-missed for the steps past the capacity: they miss it by design.
    assert not [r for r in recs if r["rule_id"] == "slo-missed"]
    out = tmp_path / "report.html"
    assert cli("--data-dir", str(data), "report", "--out", str(out)).code == 0
    page = out.read_text()
    assert 'id="sweeps"' in page
    curve = page[page.index('aria-label="sweep-curve-chat"') :]
    curve = curve[: curve.index("</svg>")]
    assert "SLO latency ≤ 600 ms" in curve  # the SLO line is drawn and labelled
    assert "alpha p99 latency" in curve and "alpha p50 TTFT" in curve
    goodput = page[page.index('aria-label="sweep-goodput-chat"') :]
    goodput = goodput[: goodput.index("</svg>")]
    assert "alpha max under SLO (6)" in goodput and "alpha knee (6)" in goodput


def test_a_series_stops_past_the_error_threshold(cli: Cli, tmp_path: Path) -> None:
    """A mock that turns away (429) what is past 2 in flight: at 4 in flight about half of the
    attempts fail, past --stop-at-errors 0.1, so 8 and 16 never run."""
    _config(
        tmp_path,
        'simulated_latency = "10ms", token_generation_rate = 1000, response_variability = 0, '
        'concurrency_limit = 2, overload = "reject", output_tokens = 2',
    )
    out = _sweep_json(
        cli, "--concurrency", "1,2,4,8,16", "--requests", "16", "--stop-at-errors", "0.1"
    )
    assert [s["load"] for s in out["steps"]] == [1, 2, 4]
    assert out["steps"][-1]["error_rate"] > 0.1
    (answer,) = out["answers"]
    assert answer["loads"] == [1.0, 2.0, 4.0]


def test_auto_rate_spreads_rates_below_the_measured_saturation(cli: Cli, tmp_path: Path) -> None:
    """As guidellm's sweep: concurrency 1, then the scenario's 8 (the saturating mock with N = 4
    and M = 64: 1 / 25 ms = 40 req/s, then about N / ((n−1)·g) = 200 req/s less t's share),
    then 3 rates spread evenly above the first up to the second; the answer is on the rates."""
    _config(
        tmp_path,
        'simulated_latency = "5ms", token_generation_rate = 500, response_variability = 0, '
        "batch_capacity = 4, concurrency_limit = 64, output_tokens = 11",
    )
    out = _sweep_json(
        cli, "--auto", "rate", "--steps", "3", "--requests", "100000", "--duration", "0.3s"
    )
    steps = out["steps"]
    assert [(s["axis"], s["load"]) for s in steps[:2]] == [
        ("concurrency", 1.0),
        ("concurrency", 8.0),
    ]
    low, high = steps[0]["throughput_rps"], steps[1]["throughput_rps"]
    assert 30 <= low <= 41 and 120 <= high <= 180
    rates = [s["load"] for s in steps[2:]]
    expected = [low + (high - low) * i / 3 for i in (1, 2, 3)]
    assert rates == pytest.approx(expected)
    (answer,) = out["answers"]
    assert answer["axis"] == "rate" and answer["steps"] == 3 and answer["steps_excluded"] == 2
    runs = EventLog(tmp_path / "data").replay("runs").collect().filter(pl.col("kind") == "started")
    modes = runs.sort("sweep_step").select("mode", "rate").rows()
    assert modes[:2] == [("closed", None), ("closed", None)]
    assert [m for m, _ in modes[2:]] == ["open"] * 3
    assert [r for _, r in modes[2:]] == pytest.approx(expected)


def test_old_run_events_without_sweep_fields_read_as_ordinary_runs(
    cli: Cli, tmp_path: Path
) -> None:
    """Run events written before sweeps lack the sweep_* columns: they read as null, so the
    run is an ordinary one and sweeps.parquet is empty."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    _config(tmp_path, "simulated_latency = 0")
    data = tmp_path / "data"
    assert cli("--data-dir", str(data), "execute", "--requests", "3", "--seed", "1").code == 0
    for path in (data / "events" / "runs").rglob("*.arrow"):
        with ipc.open_file(path) as reader:
            table = reader.read_all()
        old = table.drop_columns([c for c in table.column_names if c.startswith("sweep_")])
        path.unlink()
        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, old.schema) as writer:
            writer.write_table(old)
    assert cli("--data-dir", str(data), "aggregate").code == 0
    results = pl.read_parquet(data / "results" / "benchmark_results.parquet")
    assert results["sweep_id"].to_list() == [None]
    assert pl.read_parquet(data / "results" / "sweeps.parquet").height == 0


def test_compare_stands_on_the_everyday_run_not_the_sweeps_last_step(
    cli: Cli, tmp_path: Path
) -> None:
    """The sweep's last step (past the capacity, by design) is not the target's settings:
    compare keeps the latest ordinary run and says which sweep steps it passed over."""
    _config(tmp_path, "simulated_latency = 0, output_tokens = 2")
    path = tmp_path / "pipeline.toml"
    path.write_text(path.read_text() + "\n[compare]\nmin_requests = 1\n")
    assert cli("execute", "--requests", "4", "--concurrency", "2").code == 0
    everyday = EventLog(tmp_path / "data").replay("runs").collect()["run_id"].unique().to_list()
    assert _sweep_json(cli, "--concurrency", "1,4", "--requests", "4")["steps"]
    assert cli("aggregate").code == 0
    result = cli("compare", "--json")
    assert result.code == 0, result
    (out,) = json.loads(result.out)
    (chosen,) = out["targets"]
    assert chosen["run_id"] == everyday[0] and chosen["concurrency"] == 2
    reasons = " ".join(r for p in out["passed_over"] for r in p["reasons"])
    assert "is step 1 of sweep-" in reasons and "is step 0 of sweep-" in reasons


@pytest.mark.parametrize(
    "command", [["profile"], ["recommend"], ["compare"], ["report", "--out", "r.html"]]
)
def test_results_from_before_sweeps_ask_for_a_rebuild(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    """A results file an older aggregate wrote lacks the sweep (and SLO) columns: the stages
    that read it say to rebuild it, never a traceback."""
    from tests.results_factory import results_frame

    data = tmp_path / "data"
    (data / "results").mkdir(parents=True)
    old = results_frame(_history([4])).drop("sweep_id", "sweep_step", "sweep_axis", "sweep_load")
    old.write_parquet(data / "results" / "benchmark_results.parquet")
    result = cli("--data-dir", str(data), *command)
    assert result.code == 1, result
    assert (
        "was written by an older version of aggregate (it has no sweep_id, sweep_step" in result.err
    )
    assert "run `pipeline aggregate` to rebuild it" in result.err
    assert "Traceback" not in result.err


_STEP = st.tuples(
    st.sampled_from([1.0, 2.0, 4.0, 8.0, 16.0]),
    st.sampled_from(["completed", "timed_out", "interrupted", "failed"]),
    st.floats(0.0, 1.0),
    st.sampled_from(["concurrency", "rate"]),
)


@given(steps=st.lists(_STEP, min_size=1, max_size=12))
@settings(max_examples=150)
def test_the_answer_agrees_with_a_brute_force_reading_of_the_steps(
    steps: list[tuple[float, str, float, str]],
) -> None:
    """Whatever the order, repeats, statuses and axes of the steps: the counted steps are those
    on the last step's axis that completed (or timed out), the later one at a repeated load;
    the max load under the SLO is the top of the passing prefix, by load."""
    from stages.aggregate.sweeps import sweeps
    from tests.results_factory import result_row, results_frame

    rows = [
        result_row(
            i,
            run_id=f"r{i:02d}",
            run_status=status,
            sweep_id="sweep-x",
            sweep_step=i,
            sweep_axis=axis,
            sweep_load=load,
            slo="latency≤1s",
            slo_attainment_target=0.9,
            slo_attainment=attainment,
            goodput_rps=attainment * 10,
            slo_met=attainment >= 0.9,
        )
        for i, (load, status, attainment, axis) in enumerate(steps)
    ]
    (answer,) = sweeps(results_frame(rows)).to_dicts()
    axis = steps[-1][3]
    latest: dict[float, float] = {}
    for load, status, attainment, step_axis in steps:
        if step_axis == axis and status in ("completed", "timed_out"):
            latest[load] = attainment
    assert answer["loads"] == sorted(latest)
    assert answer["steps"] == len(latest) and answer["steps_excluded"] == len(steps) - len(latest)
    best = None
    for load in sorted(latest):
        if latest[load] < 0.9:
            break
        best = load
    assert answer["max_load_under_slo"] == best
    if best is not None:
        assert answer["goodput_at_max_rps"] == latest[best] * 10
