"""How fast is `pipeline aggregate` next to the bare polars floor, over the same event files?

Writes N synthetic request events (plus their run and sample records) through the real EventLog in
`--runs` run partitions (tests/eventgen.py: streamed answers with 4-24 chunks, ~5% errors of every
type, retries, warmup), then times, each in a fresh subprocess so peak RSS is clean:

- floor: `scan_ipc` over the request files + `group_by(run_id, scenario, target)` with 12 aggregates
  (count, successes, 4 latency quantiles, mean, min, max, std, mean TTFT, output tokens), streaming;
- transform: what `pipeline aggregate` runs in-process: replay the three tables and compute every
  output column (results incl. pooled ITL percentiles, and the per-second time series);
- aggregate: the whole `run_aggregate` (lock, replay, transform, write both Parquet files).

Each case runs `--repeat` times, interleaved; the table shows the fastest time and the largest peak.

    python bench/aggregate_bench.py                      # 1M events
    python bench/aggregate_bench.py --events 10000000    # 10M events (~4 GB of events on disk)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.eventlog import EventLog  # noqa: E402
from stages.aggregate.run import run_aggregate  # noqa: E402
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


def floor(data_dir: Path) -> int:
    files = [str(f.path) for f in EventLog(data_dir).files("requests")]
    lat = pl.col("latency_us")
    frame = (
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
    return frame.collect(engine="streaming").height


def transform(data_dir: Path) -> int:
    log = EventLog(data_dir)
    requests = log.replay("requests").frame
    runs = log.replay("runs").frame
    samples = log.replay("samples").frame
    return aggregate(requests, runs, samples, load_config(cwd=data_dir).price).results.height


def whole(data_dir: Path) -> int:
    return run_aggregate(data_dir, load_config(cwd=data_dir).price).total_rows


def measure(case: str, data_dir: Path) -> None:
    """Child process: run one case once, print seconds and this process's peak RSS as JSON."""
    run = {"floor": floor, "transform": transform, "aggregate": whole}[case]
    started = time.perf_counter()
    rows = run(data_dir)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak_rss(), "rows": rows}))


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


def child(case: str, data_dir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", case, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="Reused when it holds the same events."
    )
    parser.add_argument("--measure", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.data_dir)
        return
    data_dir = (
        args.data_dir or Path(tempfile.gettempdir()) / f"aggregate-bench-{args.events}-{args.runs}"
    )
    events = generate(data_dir, args.events, args.runs)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for case in CASES:
            got = child(case, data_dir)
            seen = best.setdefault(case, got)
            seen["seconds"] = min(seen["seconds"], got["seconds"])
            seen["peak_rss_bytes"] = max(seen["peak_rss_bytes"], got["peak_rss_bytes"])
    base = best["floor"]["seconds"]
    print(
        f"{events:,} request events, {args.runs} runs; polars {pl.__version__}; "
        f"{os.cpu_count()} cpus; {platform.machine()}; best of {args.repeat}"
    )
    print(f"{'case':<10} {'seconds':>8} {'events/s':>12} {'vs floor':>9} {'peak RSS':>10}")
    for case in CASES:
        got = best[case]
        print(
            f"{case:<10} {got['seconds']:>8.2f} {events / got['seconds']:>12,.0f} "
            f"{got['seconds'] / base:>8.2f}x {got['peak_rss_bytes'] / 2**20:>7,.0f} MB"
        )


if __name__ == "__main__":
    main()
