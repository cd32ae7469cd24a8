"""What does sharding a run cost, and what does it measure? One runner against `--shards N`.

Starts `pipeline mock-server` in its own process (TTFT 50 ms, then 100 tokens/s, 16 tokens: a
response's last byte is due at 200 ms, no spread, no errors), then plays the same seeded open
loop (RATE requests/s for DURATION) with one runner and with `--shards 2` and `--shards 4`
(local processes), each into its own data directory, all with `--start-at +4s`. For each it
prints the wall time of the command, what `pipeline aggregate` made of the events (requests,
req/s, latency p50 and p95 above the server's 200 ms), whether any client was saturated, and
the spread of the shards' recorded clock offsets. Only 127.0.0.1; about a minute. The machine
is shared: read the differences, not the absolutes.

    python bench/shards_bench.py [--rate R] [--duration S]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
import psutil  # noqa: E402

from pipeline.store.eventlog import EventLog  # noqa: E402

IDEAL_MS = 50.0 + 15 * 10.0


def _pipeline(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    knobs = ["--latency", "50ms", "--token-rate", "100", "--output-tokens", "16"]
    knobs += ["--variability", "0", "--error-rate", "0", "--concurrency-limit", "1000"]
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "mock-server", "--port", "0", *knobs],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdout is not None
    root = server.stdout.readline().strip().rsplit(" ", 1)[-1]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "pipeline.toml").write_text(
                'default_scenarios = ["open"]\n\n[[targets]]\nname = "srv"\n'
                'provider = "openai-compatible"\nmodel = "mock"\n'
                f'base_url = "{root}/v1"\n\n[[scenarios]]\nname = "open"\n'
                'test_prompts = ["Say hi."]\nmax_tokens = 16\nconcurrency_level = 100\n'
                f"rate = {args.rate}\nduration = {args.duration}\n"
                'timeout_duration = "120s"\nstreaming_required = true\n'
            )
            for shards in (1, 2, 4):
                data = f"d{shards}"
                command = ["--data-dir", data, "execute", "--seed", "5", "--start-at", "+4s"]
                if shards > 1:
                    command += ["--shards", str(shards)]
                started = time.perf_counter()
                _pipeline(work, *command, "-q")
                wall = time.perf_counter() - started
                _pipeline(work, "--data-dir", data, "aggregate", "-q")
                result = pl.read_parquet(work / data / "results" / "benchmark_results.parquet")
                r = result.row(0, named=True)
                runs = EventLog(work / data).replay("runs").collect()
                offsets = runs.filter(pl.col("kind") == "started").get_column("clock_offset_us")
                rows.append(
                    (
                        shards,
                        wall,
                        r["operations"],
                        r["throughput_rps"],
                        r["latency_p50_ms"] - IDEAL_MS,
                        r["latency_p95_ms"] - IDEAL_MS,
                        r["run_status"],
                        r["client_saturated"],
                        (offsets.max() - offsets.min()) / 1000,  # type: ignore[operator]
                    )
                )
    finally:
        server.terminate()
        server.wait(timeout=10)
    cpus = os.cpu_count()
    memory = psutil.virtual_memory().total / 2**30
    print(
        f"# shards_bench {datetime.date.today()} · {cpus} cores, {memory:.0f} GiB, Python "
        f"{platform.python_version()} · open loop {args.rate:g}/s for {args.duration:g}s, "
        f"+4s start"
    )
    print(
        f"{'runners':>7} {'wall s':>7} {'requests':>8} {'req/s':>7} {'p50-200':>8} "
        f"{'p95-200':>8} {'status':>10} {'saturated':>9} {'offsets ms':>10}"
    )
    for shards, wall, ops, rps, p50, p95, status, saturated, spread in rows:
        print(
            f"{shards:>7} {wall:>7.1f} {ops:>8} {rps:>7.1f} {p50:>8.2f} {p95:>8.2f} "
            f"{status:>10} {saturated!s:>9} {spread:>10.2f}"
        )


if __name__ == "__main__":
    main()
