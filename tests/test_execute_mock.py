"""The in-process `mock` provider: same classification as over HTTP, real memory, deterministic."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import trio

from pipeline.cli.execute import lag_warning
from pipeline.store.eventlog import EventLog
from stages.execute.load.plan import ExecuteOptions
from tests._execute_support import config, requests, run, runs, scenario
from tests.conftest import run_pipeline
from tests.test_execute_http import EXPECTED


def mock_target(**knobs: object) -> dict[str, object]:
    base = {"simulated_latency": "5ms", "token_generation_rate": 2000, "seed": 1}
    return {
        "name": "m",
        "provider": "mock",
        "model": "mock-small",
        "mock": {**base, **knobs},
        "request_timeout": "300ms",
    }


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_injected_errors_match_the_http_classification(tmp_path: Path, kind: str) -> None:
    tgt = mock_target(error_injection_rate=1.0, error_kinds=[kind], hang="3s", output_tokens=4)
    scns = [
        scenario(name="a", expected_operations=2),
        scenario(name="b", expected_operations=1, streaming_required=False),
    ]
    loaded = config([tgt], scns, tmp_path)
    await run(loaded, tmp_path / "data", ExecuteOptions(scenarios=("a", "b")))
    status, error_type, http = EXPECTED[kind]
    for row in requests(tmp_path / "data").to_dicts():
        assert (row["status"], row["error_type"]) == (status, error_type), row
        assert row["http_status"] == (http or (503 if kind == "unavailable" else None)), row


async def test_same_seed_same_outcomes_and_ok_rows_are_complete(tmp_path: Path) -> None:
    """The run's seed decides the mock's faults: the same --seed fails the same requests,
    another --seed others (the mock's own `seed` is 1 throughout)."""
    outcomes = []
    for name, seed in (("x", 11), ("y", 11), ("z", 12)):
        tgt = mock_target(error_injection_rate=0.3, output_tokens=5, response_variability=0.2)
        loaded = config(
            [tgt],
            [scenario(expected_operations=30, concurrency_level=4, tools_required=True)],
            tmp_path,
        )
        await run(loaded, tmp_path / name, ExecuteOptions(seed=seed))
        frame = requests(tmp_path / name).sort("request_index")
        outcomes.append(frame["error_type"].to_list())
        ok = frame.filter(status="ok")
        assert ok.height > 10 and (ok["output_tokens"] == 5).all() and (ok["tool_calls"] == 1).all()
        assert ok["chunk_offsets_us"].list.len().to_list() == [5] * ok.height
    assert outcomes[0] == outcomes[1] and any(outcomes[0])
    assert outcomes[2] != outcomes[0] and any(outcomes[2])


async def test_memory_simulation_shows_in_the_samples(tmp_path: Path) -> None:
    before = psutil.Process().memory_info().rss
    tgt = mock_target(
        memory_usage_simulation=32 * 1024 * 1024, simulated_latency="400ms", output_tokens=1
    )
    loaded = config([tgt], [scenario(expected_operations=4, concurrency_level=4)], tmp_path)
    result = await run(loaded, tmp_path / "data")
    assert result.pairs[0].peak_rss_bytes - before > 100 * 1024 * 1024  # 4 × 32 MiB held at once


async def test_a_starved_event_loop_shows_as_loop_lag(tmp_path: Path) -> None:
    """While another task keeps the loop from running (as another process taking the CPU would),
    the sampler wakes late: each sample records by how much, and the run's finished event and
    result carry the p95, without the CPU-saturation flag (the loop was blocked, not busy)."""
    tgt = mock_target(simulated_latency="600ms", output_tokens=1)
    loaded = config([tgt], [scenario(expected_operations=4, concurrency_level=2)], tmp_path)
    data = tmp_path / "data"

    async def starve() -> None:
        while True:
            time.sleep(0.03)  # noqa: ASYNC251 - the point: the loop cannot run meanwhile
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(starve)
        result = await run(loaded, data)
        nursery.cancel_scope.cancel()
    (pair,) = result.pairs
    assert pair.client_loop_lag_p95_ms is not None and pair.client_loop_lag_p95_ms >= 10
    samples = EventLog(data).replay("samples").collect()
    lags = samples["loop_lag_us"].drop_nulls()
    assert len(lags) >= 5 and lags.max() >= 10_000  # type: ignore[operator]  # every ~100 ms
    finished = runs(data).filter(kind="finished")
    assert finished["client_loop_lag_p95_ms"].to_list() == [pair.client_loop_lag_p95_ms]


def test_execute_warns_about_a_starved_loop_only_when_not_saturated() -> None:
    pair = {"scenario": "s", "target": "t", "client_saturated": False}
    assert lag_warning({**pair, "client_loop_lag_p95_ms": 12.4}, 5.0) == (
        "warning: s × t: the client's event loop ran 12 ms late (p95) without being "
        "CPU-saturated (other processes starving it, or bursts of work), so its timings can be "
        "up to that much late; rerun on a quieter machine or with more --workers "
        "(client_loop_lag_p95_ms in the runs events)"
    )
    assert lag_warning({**pair, "client_loop_lag_p95_ms": 1.2}, 5.0) is None
    assert lag_warning({**pair, "client_loop_lag_p95_ms": None}, 5.0) is None
    busy = {**pair, "client_saturated": True, "client_loop_lag_p95_ms": 40.0}
    assert lag_warning(busy, 5.0) is None  # the saturation warning says it already


async def test_attempts_cut_off_by_a_failure_say_so_and_the_run_says_why(tmp_path: Path) -> None:
    """A failure that tears the load down (here a provider bug on one request while three
    others are in flight) is not a timeout: the cancelled attempts and the run say what
    happened, and the run's message is the error itself, not "ExceptionGroup ..."."""
    from dataclasses import replace

    from schemas import get_provider, register_provider
    from stages.execute.client.providers import Attempt, ProviderSettings, RequestSpec
    from stages.execute.session import describe

    class Broken:
        kind = "mock"

        def __init__(self, settings: ProviderSettings) -> None:
            pass

        async def send(self, spec: RequestSpec, attempt: Attempt) -> None:
            if spec.request_index == 3:
                await trio.sleep(0.05)
                raise RuntimeError("provider bug")
            await trio.sleep(30)

        async def aclose(self) -> None:
            return None

    original = get_provider("mock")
    register_provider(replace(original, factory=Broken), replace=True)
    try:
        loaded = config(
            [{"name": "m", "provider": "mock", "model": "mock-small"}],
            [scenario(expected_operations=4, concurrency_level=4)],
            tmp_path,
        )
        with pytest.raises(BaseExceptionGroup) as raised:  # run_prepared: `execute` unwraps it
            await run(loaded, tmp_path / "data")
        assert describe(raised.value) == "RuntimeError: provider bug"
    finally:
        register_provider(original, replace=True)
    rows = requests(tmp_path / "data").to_dicts()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"cancelled"}
    assert all("timed out" not in r["error_message"] for r in rows)
    assert all("the run failed" in r["error_message"] for r in rows)
    (finished,) = runs(tmp_path / "data").filter(kind="finished").to_dicts()
    assert finished["status"] == "failed" and finished["message"] == "RuntimeError: provider bug"


def test_the_seed_option_moves_the_injected_faults_in_real_processes(tmp_path: Path) -> None:
    """`pipeline execute --seed N` in its own process: the same N fails the same requests, two
    seeds fail different ones (before, the faults sat on the same indexes whatever the seed)."""
    (tmp_path / "pipeline.toml").write_text(
        '[[targets]]\nname = "m"\nprovider = "mock"\nmodel = "mock-small"\n'
        'mock = { simulated_latency = "1ms", token_generation_rate = 5000, '
        "error_injection_rate = 0.2, seed = 1 }\n",
        encoding="utf-8",
    )
    failing = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        proc = run_pipeline(
            "-q", "--data-dir", name, "execute", "--requests", "40", "--seed", seed, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        frame = requests(tmp_path / name).filter(pl.col("status") != "ok")
        failing.append(frame["request_index"].to_list())
    assert failing[0] == failing[1] and failing[0]
    assert failing[2] != failing[0] and failing[2]
