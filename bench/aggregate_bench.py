"""How fast is `pipeline aggregate` next to the bare polars floor, over the same event files?

Writes N synthetic request events (plus their run and sample records) through the real EventLog in
`--runs` run partitions (tests/eventgen.py: streamed answers with 4-24 chunks, ~5% errors of every
type, retries, warmup), then times three cases, each in its own fresh subprocess (so its peak RSS
is its own), `--repeat` times in that process (the first run pays for warming up the allocator and
thread pools, as any long-lived process would once):

- floor: `scan_ipc` over the request files + `group_by(run_id, scenario, target)` with 12 aggregates
  (count, successes, 4 latency quantiles, mean, min, max, std, mean TTFT, output tokens); each
  repeat runs it on polars' streaming and in-memory engines and keeps the faster;
- transform: what `pipeline aggregate` runs in-process: replay the three tables and compute every
  output column (results incl. pooled ITL percentiles, and the per-second time series);
- aggregate: the whole `run_aggregate` (lock, replay, transform, write both Parquet files);
- slo (with `--slo "ttft=50ms,tpot=10ms,latency=400ms"`): the same, every result judged by that
  SLO (attainment per threshold and goodput), to show what an SLO costs next to `aggregate`.

The three cases take turns, `--rounds` times, so that a shared machine's slow minutes fall on all
of them alike. The table shows each case's fastest and median time over every round and repeat,
and its largest peak RSS; below it, the whole stage's best time over the floor's, round by round.

    python bench/aggregate_bench.py                      # 1M events
    python bench/aggregate_bench.py --events 10000000    # 10M events (~1.7 GB of events on disk)
    python bench/aggregate_bench.py --slo "ttft=50ms,tpot=10ms,latency=400ms"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.store.eventlog import EventLog  # noqa: E402
from schemas import parse_slo  # noqa: E402
from stages.aggregate.run import run_aggregate  # noqa: E402
from stages.aggregate.scan import COLUMNS  # noqa: E402
from stages.aggregate.slo import SloPolicy  # noqa: E402
from stages.aggregate.transform import KEYS, aggregate  # noqa: E402

CASES = ("floor", "transform", "aggregate")


def generate(data_dir: Path, events: int, runs: int) -> int:
    """Write the synthetic runs unless `data_dir` already holds this exact set; return the count."""
    from tests.eventgen import many, write_runs

    marker = data_dir / "bench.json"
    wanted = {"events": events, "runs": runs}
    if marker.is_file() and json.loads(marker.read_text()).get("wanted") == wanted:
        return int(json.loads(marker.read_text())["written"])
    per_run = max(1, round(events / runs / 1.025))  # ~2.5% of attempts are retries
    started = time.perf_counter()
    tables = write_runs(
        EventLog(data_dir),
        many("bench", runs, requests=per_run, concurrency=16, warmup=8),
        batch_rows=50_000,
    )
    written: int = sum(t.num_rows for t in tables)
    marker.write_text(json.dumps({"wanted": wanted, "written": written}))
    print(
        f"wrote {written:,} request events in {runs} runs in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )
    return written


def _floor_query(files: list[str]) -> pl.LazyFrame:
    lat = pl.col("latency_us")
    return (
        pl.scan_ipc(files, glob=False)
        .group_by(KEYS)
        .agg(
            pl.len().alias("n"),
            (pl.col("status") == "ok").sum().alias("ok"),
            *(
                lat.quantile(q, interpolation="linear").alias(f"q{q}")
                for q in (0.5, 0.9, 0.95, 0.99)
            ),
            lat.mean().alias("mean"),
            lat.min().alias("min"),
            lat.max().alias("max"),
            lat.std(ddof=0).alias("std"),
            pl.col("ttft_us").mean().alias("ttft"),
            pl.col("output_tokens").sum().alias("tokens"),
        )
    )


def floor(data_dir: Path) -> tuple[float, int]:
    """The floor on each of polars' engines: (the faster one's seconds, rows)."""
    files = [str(f.path) for f in EventLog(data_dir).files("requests")]
    best, rows = float("inf"), 0
    for engine in ("streaming", "in-memory"):
        started = time.perf_counter()
        rows = _floor_query(files).collect(engine=engine).height
        best = min(best, time.perf_counter() - started)
    return best, rows


def _timed(run: Callable[[Path], int]) -> Callable[[Path], tuple[float, int]]:
    def timed(data_dir: Path) -> tuple[float, int]:
        started = time.perf_counter()
        rows = run(data_dir)
        return time.perf_counter() - started, rows

    return timed


def transform(data_dir: Path) -> int:
    log = EventLog(data_dir)
    requests = log.replay("requests").batch_sources(COLUMNS)
    runs = log.replay("runs").frame
    samples = log.replay("samples").frame
    return aggregate(requests, runs, samples, load_config(cwd=data_dir).price).results.height


def whole(data_dir: Path) -> int:
    return run_aggregate(data_dir, load_config(cwd=data_dir).price).total_rows


def judged(slo: str) -> Callable[[Path], int]:
    policy = SloPolicy(override=parse_slo(slo))

    def run(data_dir: Path) -> int:
        return run_aggregate(data_dir, load_config(cwd=data_dir).price, slo=policy).total_rows

    return run


def measure(case: str, data_dir: Path, repeat: int, slo: str | None) -> None:
    """Child process: run one case `repeat` times; print the times and the peak RSS as JSON."""
    if case == "slo":
        assert slo is not None
        run = _timed(judged(slo))
    else:
        run = {"floor": floor, "transform": _timed(transform), "aggregate": _timed(whole)}[case]
    times = [run(data_dir)[0] for _ in range(repeat)]
    print(json.dumps({"times": times, "peak_rss_bytes": peak_rss()}))


def peak_rss() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: ru_maxrss survives fork + exec, so a child
    of the process that generated the events would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(case: str, data_dir: Path, repeat: int, slo: str | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", case, "--data-dir", str(data_dir)]
    cmd += ["--repeat", str(repeat)] + (["--slo", slo] if slo else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="Runs per case and round.")
    parser.add_argument("--rounds", type=int, default=3, help="Turns each case takes.")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="Reused when it holds the same events."
    )
    parser.add_argument(
        "--slo", default=None, help="Also time the whole stage judging every result by this SLO."
    )
    parser.add_argument("--measure", choices=(*CASES, "slo"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.data_dir, args.repeat, args.slo)
        return
    cases = (*CASES, "slo") if args.slo else CASES
    data_dir = (
        args.data_dir or Path(tempfile.gettempdir()) / f"aggregate-bench-{args.events}-{args.runs}"
    )
    events = generate(data_dir, args.events, args.runs)
    rounds = [
        {case: child(case, data_dir, args.repeat, args.slo) for case in cases}
        for _ in range(args.rounds)
    ]
    times = {case: [t for got in rounds for t in got[case]["times"]] for case in cases}
    base = min(times["floor"])
    print(
        f"{events:,} request events, {args.runs} runs; polars {pl.__version__}; "
        f"{os.cpu_count()} cpus; {platform.machine()}; {args.rounds} rounds x {args.repeat} "
        "runs per case"
    )
    print(
        f"{'case':<10} {'best s':>7} {'median s':>9} {'events/s':>12} {'vs floor':>9} "
        f"{'peak RSS':>10}"
    )
    for case in cases:
        best = min(times[case])
        rss = max(got[case]["peak_rss_bytes"] for got in rounds)
        print(
            f"{case:<10} {best:>7.2f} {statistics.median(times[case]):>9.2f} "
            f"{events / best:>12,.0f} {best / base:>8.2f}x {rss / 2**20:>7,.0f} MB"
        )
    ratios = [min(got["aggregate"]["times"]) / min(got["floor"]["times"]) for got in rounds]
    print("aggregate / floor, round by round: " + ", ".join(f"{r:.2f}x" for r in ratios))
    if args.slo:
        ratios = [min(got["slo"]["times"]) / min(got["aggregate"]["times"]) for got in rounds]
        print(
            f"slo ({args.slo}) / aggregate, round by round: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
        )


if __name__ == "__main__":
    main()
