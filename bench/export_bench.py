"""How long does `pipeline export` take, and how much memory, for N request events over D days?

Writes N synthetic request events (tests/eventgen.py, with their run and sample records) through
the real EventLog, in runs spread over `--days` date partitions, then times, each in a fresh
subprocess (so its peak RSS is its own):

- parquet, full: the first export into an empty folder;
- parquet, nothing changed: the same command again (it lists the partitions and writes none);
- parquet, one day changed: after one more small run lands in one day;
- delta, full: the first `--format delta` export (one commit per day and table);
- duckdb: a DuckDB group-by (count, p50, p95 of latency per target) over the Parquet export,
  as a reader would run it.

The cases run in that order `--rounds` times (each round from an empty export folder), so a
shared machine's slow minutes fall on all of them; the table shows each case's fastest and
median time and its largest peak RSS.

    python bench/export_bench.py                     # 1M events over 10 days
    python bench/export_bench.py --events 10000000   # 10M
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.store.eventlog import EventLog  # noqa: E402

CASES = ("parquet-full", "parquet-unchanged", "parquet-one-day", "delta-full", "duckdb-read")


def generate(data_dir: Path, events: int, days: int) -> None:
    from tests.eventgen import EPOCH, RunSpec, write_run

    log = EventLog(data_dir)
    per_run = 100_000
    for i in range(max(1, events // per_run)):
        spec = RunSpec(run_id=f"bench-{i:04d}", requests=per_run, seed=i)
        write_run(log, replace(spec, start=EPOCH + timedelta(days=i % days, minutes=i)))


def measure(case: str, data_dir: Path) -> dict[str, Any]:
    """Child process: run one case; its time and peak RSS."""
    from stages.export import run_export

    start = time.perf_counter()
    if case == "duckdb-read":
        import duckdb

        glob = data_dir / "export" / "parquet" / "requests" / "**" / "*.parquet"
        query = duckdb.sql(
            f"SELECT target, count(*), quantile_cont(latency_us, [0.5, 0.95]) "
            f"FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY target"
        )
        assert query is not None
        query.fetchall()
        rows = 0
    else:
        if case == "parquet-one-day":
            from tests.eventgen import EPOCH, RunSpec, write_run

            write_run(EventLog(data_dir), RunSpec(run_id="late", requests=1000, start=EPOCH))
        fmt = "delta" if case.startswith("delta") else "parquet"
        report = run_export(data_dir, fmt)
        rows = sum(t.rows for t in report.tables)
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    return {"seconds": seconds, "peak_rss_bytes": peak, "rows": rows}


def child(case: str, data_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--child", choices=CASES, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.data_dir)))
        return
    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        data = work / "data"
        generate(data, args.events, args.days)
        size = sum(p.stat().st_size for p in (data / "events").rglob("*.arrow"))
        print(
            f"{args.events:,} request events over {args.days} days ({size / 2**20:,.0f} MiB of "
            f"events); {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        got: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            shutil.rmtree(data / "export", ignore_errors=True)
            for case in CASES:
                got[case].append(child(case, data))
        print(f"{'case':<20}{'fastest s':>10}{'median s':>10}{'peak RSS':>12}{'rows written':>14}")
        for case in CASES:
            times = [r["seconds"] for r in got[case]]
            rss = max(r["peak_rss_bytes"] for r in got[case])
            print(
                f"{case:<20}{min(times):>10.2f}{statistics.median(times):>10.2f}"
                f"{rss / 2**20:>8,.0f} MiB{got[case][0]['rows']:>14,}"
            )
        out = sum(p.stat().st_size for p in (data / "export" / "parquet").rglob("*.parquet"))
        print(f"Parquet export: {out / 2**20:,.0f} MiB")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
