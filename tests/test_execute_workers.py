"""Worker processes: the same events as one process, a dead worker fails the run, the verdicts.

Real spawned processes against the project's mock server on 127.0.0.1; nothing here is timed
(the timing accuracy is bench/client_bench.py's job).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import psutil
import pytest
import trio

from pipeline.errors import WorkerFailedError
from pipeline.store.eventlog import EventLog
from schemas import BenchmarkScenario
from stages.execute.load.plan import (
    ExecuteOptions,
    new_run_id,
    plan_load,
    prepare,
    schedule_share,
    split_concurrency,
)
from stages.execute.record.capacity import (
    BUSY_SHARE,
    MIN_JUDGED_S,
    Saturation,
    default_workers,
    saturation,
)
from stages.execute.session import run_prepared
from tests._execute_support import config, mock_server, requests, runs, scenario, target
from tests.conftest import ROOT


def _workers_of(process: psutil.Process) -> list[psutil.Process]:
    """The spawned workers (not multiprocessing's resource tracker)."""
    return [c for c in process.children() if "spawn_main" in " ".join(c.cmdline())]


IDENTITY = ["request_index", "prompt_index", "attempt", "warmup", "status", "output_tokens"]


async def _run(loaded: Any, data: Path, workers: int, **options: Any) -> Any:
    prepared, seed = prepare(loaded, ExecuteOptions(seed=5, workers=workers, **options))
    assert [p.workers for p in prepared] == [workers]
    return await run_prepared(prepared, data, new_run_id(), seed, handle_signals=False)


def _events(data: Path) -> pl.DataFrame:
    return requests(data).select(IDENTITY).sort("request_index", "attempt")


@pytest.mark.parametrize(
    "load",
    [
        {"expected_operations": 40, "concurrency_level": 5, "warmup": 3},
        {"expected_operations": 30, "concurrency_level": 4, "rate": 200.0, "arrival": "constant"},
    ],
    ids=["closed", "open"],
)
async def test_workers_give_the_same_event_set_as_one_process(
    tmp_path: Path, load: dict[str, Any]
) -> None:
    async with mock_server(output_tokens=4) as url:
        tgt = target(provider="openai-compatible", base_url=f"{url}/v1", api_key_env=None)
        sc = scenario(test_prompts=["a", "b", "c", "d"], **load)
        loaded = config([tgt], [sc], tmp_path)
        one = await _run(loaded, tmp_path / "one", 1)
        three = await _run(loaded, tmp_path / "three", 3)
    assert one.status == three.status == "completed"
    assert _events(tmp_path / "one").equals(_events(tmp_path / "three"))
    frame = requests(tmp_path / "three")
    assert frame["event_id"].n_unique() == frame.height
    assert set(frame["worker"]) == {1, 2, 3}  # every worker played a share
    assert three.pairs[0].requests == one.pairs[0].requests and three.pairs[0].workers == 3
    finished = runs(tmp_path / "three").filter(kind="finished").to_dicts()[0]
    assert finished["workers"] == 3 and finished["requests_sent"] == frame.height
    assert finished["client_loop_lag_p95_ms"] is not None  # the workers' samplers reached it
    samples = EventLog(tmp_path / "three").replay("samples").collect()
    assert set(samples["worker"]) == {1, 2, 3}


async def test_a_worker_killed_mid_run_fails_the_run_without_hanging(tmp_path: Path) -> None:
    async with mock_server(simulated_latency="300ms", output_tokens=2) as url:
        tgt = target(provider="openai-compatible", base_url=f"{url}/v1", api_key_env=None)
        loaded = config([tgt], [scenario(expected_operations=500, concurrency_level=4)], tmp_path)
        prepared, seed = prepare(loaded, ExecuteOptions(workers=2))
        data = tmp_path / "data"

        async def kill_one_worker() -> None:
            me = psutil.Process()
            # Polls other processes and the disk: there is no trio.Event to wait on.
            while len(_workers_of(me)) < 2 or not list((data / "events").rglob("requests/*/*")):  # noqa: ASYNC110
                await trio.sleep(0.05)
            os.kill(_workers_of(me)[0].pid, signal.SIGKILL)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_one_worker)
                with pytest.raises(BaseExceptionGroup) as raised:
                    await run_prepared(prepared, data, new_run_id(), seed, handle_signals=False)
    assert raised.group_contains(WorkerFailedError, match="killed by SIGKILL")
    finished = runs(data).filter(kind="finished").to_dicts()
    assert [r["status"] for r in finished] == ["failed"]
    assert "killed by SIGKILL" in finished[0]["message"]
    assert not _workers_of(psutil.Process())  # no worker left behind


def test_sigint_to_the_parent_stops_every_worker_and_exits_130(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "pipeline", "mock-server", "--port", "0", "--latency", "2s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    ) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            port = int(line.rsplit(":", 1)[1])
            cfg = tmp_path / "pipeline.toml"
            cfg.write_text(
                f'[[targets]]\nname = "srv"\nprovider = "openai-compatible"\nmodel = "m"\n'
                f'base_url = "http://127.0.0.1:{port}/v1"\n[[scenarios]]\nname = "slow"\n'
                'test_prompts = ["x"]\nexpected_operations = 50\nconcurrency_level = 4\n'
                "max_tokens = 4\nstreaming_required = true\n"
            )
            data = tmp_path / "data"
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            args = ["--data-dir", str(data), "--config", str(cfg), "execute", "--workers", "2"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "-q", *args, "--scenario", "slow"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                deadline = time.monotonic() + 60
                samples = data / "events" / "samples"
                # Both workers flushed samples (~1 s after they started): their requests are out.
                while not (list(samples.rglob("*-w1[.-]*")) and list(samples.rglob("*-w2[.-]*"))):
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "the workers never started"
                    time.sleep(0.05)
                time.sleep(0.2)
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
        finally:
            server.terminate()
    assert proc.returncode == 130, err
    finished = runs(data).filter(kind="finished").to_dicts()
    assert [(r["status"], r["workers"]) for r in finished] == [("interrupted", 2)]
    frame = requests(data)
    assert frame.height == 4 and set(frame["status"]) == {"cancelled"}
    assert set(frame["worker"]) == {1, 2}
    assert "interrupted (SIGINT)" in frame["error_message"][0]


def test_the_schedule_is_dealt_out_exactly() -> None:
    assert split_concurrency(100, 3) == [34, 33, 33] and sum(split_concurrency(7, 7)) == 7
    sc = BenchmarkScenario.model_validate(
        scenario(expected_operations=101, concurrency_level=10, rate=50.0, warmup=2)
    )
    plan = plan_load(sc, 1, seed=3)
    slots = split_concurrency(10, 3)
    shares = [schedule_share(plan, slots, w) for w in range(3)]
    merged = sorted(item for share in shares for item in share)
    one = list(zip(range(plan.warmup, plan.total), plan.arrivals_s, strict=True))
    assert merged == one
    assert [len(s) for s in shares] == [41, 30, 30]  # in proportion to the slots (4, 3, 3)


def test_saturation_verdict_from_samples() -> None:
    s = 1_000_000_000  # ns; samples 1 s apart keep every series above MIN_JUDGED_S
    busy = [(i * s, i * 950_000) for i in range(11)]  # 95% of a core, all along
    idle = [(i * s, i * 100_000) for i in range(11)]
    mixed = [(0, 0), (s, 950_000), (2 * s, 1_000_000), (3 * s, 1_050_000)]
    assert saturation([idle]).share == 0.0 and saturation([idle]).saturated is False
    verdict = saturation([idle, busy])  # any one process saturated flags the run
    assert verdict.share == 1.0 and verdict.saturated is True
    third = saturation([mixed])
    assert third.share == pytest.approx(1 / 3) and third.saturated is True
    edge = [(0, 0), (s, int(BUSY_SHARE * 1_000_000))]  # exactly at the line: not busy
    assert saturation([edge]).share == 0.0
    assert saturation([[(0, 0)]]).saturated is None and saturation([]).share is None
    one_in_five = [(i * s, 0) for i in range(5)] + [(5 * s, 950_000)]
    assert saturation([one_in_five]).share == pytest.approx(0.2)
    assert saturation([one_in_five]).saturated is False  # > 20% is needed


def test_a_run_too_short_to_judge_is_not_called_saturated() -> None:
    """A target refusing every connection ends the run in milliseconds, all of them start-up
    work: that said "CPU-saturated for 100% of the run"."""
    ms = 1_000_000
    blink = [(0, 0), (40 * ms, 40_000)]  # 40 ms, all of it on the CPU
    assert saturation([blink]) == Saturation(None, None, None)
    assert saturation([blink, [(0, 0), (int(MIN_JUDGED_S * 1e9), 0)]]).share == 0.0


def test_loop_lag_verdict_is_the_worst_process_p95() -> None:
    ms = 1_000_000  # ns
    idle = [(i * 100 * ms, 0) for i in range(21)]
    calm, starved = [1_000] * 19 + [40_000], [1_000] * 18 + [40_000, 50_000]
    assert saturation([idle], [calm]).lag_p95_ms == 1.0  # one late wake in 20 is not the p95
    assert saturation([idle, idle], [calm, starved]).lag_p95_ms == 40.0
    assert saturation([idle], [[]]).lag_p95_ms is None and saturation([]).lag_p95_ms is None
    assert saturation([[(0, 0)]], [[7_000]]).lag_p95_ms == 7.0  # even when CPU cannot be judged


def test_default_workers_rule() -> None:
    assert default_workers(1, 64, True, cpus=8) == 1  # a small run pays for no process
    assert default_workers(16, 16, True, cpus=8) == 1
    assert default_workers(100, 16, True, cpus=8) > 1
    assert default_workers(100, 16, True, cpus=2) == 2  # never more than the CPUs
    assert default_workers(100, 16, True, rate=5.0, cpus=8) == 1  # an open loop's rate caps it
    assert default_workers(3, 1, True, cpus=64) <= 3  # nor more than the slots
