"""How long does `pipeline report` take over a long history (a year of hourly runs)?

The history is built so that everything the report reads is what the stages write:

- The latest runs are real events (tests/eventgen.py, through the real EventLog) aggregated by the
  real `aggregate` stage: per target, the last `--real` hourly runs, the very latest one long
  (`--latest-requests` requests, minutes to hours of time series) and one target's latest short
  (a few seconds), so the over-time charts see both ends.
- The older runs are synthesized as results rows (tests/results_factory.py's `earlier_runs`):
  copies of those real rows, one per hour back to `--runs` runs per target, with a slow drift and
  noise in latency and throughput, their own run ids and start times (writing 8,760 × targets
  runs of events would take the bench longer than the report). The results file is written by
  the outputs writer.
- Then the real `profile` and `recommend` stages run over the whole history.

Each measurement runs `pipeline report --out FILE` in a fresh process (`python -m
pipeline.cli.entry`, imports included, as a user runs it) and takes its wall time and peak RSS
(`wait4`). With `--before DIR`, the same data is also reported by the code in DIR (a source tree
of another version, e.g. `git archive main | tar -x -C DIR`), the two taking turns `--rounds`
times; the table shows each one's best and median.

    python bench/report_bench.py                                 # 24, 720 and 8,760 runs
    python bench/report_bench.py --runs 8760 --before /tmp/main  # side by side with main
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from pipeline.store.eventlog import EventLog  # noqa: E402
from pipeline.store.layout import RESULTS, Layout  # noqa: E402
from pipeline.store.location import open_store  # noqa: E402
from pipeline.store.outputs import write_output  # noqa: E402
from schemas import CompareSettings, ModelPrice, RecommendSettings, TrendSettings  # noqa: E402
from stages.aggregate.run import run_aggregate  # noqa: E402
from stages.aggregate.transform import KEYS  # noqa: E402
from stages.profile.run import run_profile  # noqa: E402
from stages.recommend.run import run_recommend  # noqa: E402

TARGETS = (("mock-fast", "mock-small"), ("mock-slow", "mock-large"), ("mock-mid", "mock-mid"))
EPOCH = datetime(2025, 3, 2, tzinfo=UTC)
PRICES = {
    "mock-small": ModelPrice(input=0.1, output=0.4),
    "mock-mid": ModelPrice(input=0.5, output=1.5),
    "mock-large": ModelPrice(input=3, output=15),
}


@dataclass(frozen=True)
class History:
    runs: int
    """Runs per (scenario, target)."""
    targets: int
    scenarios: int
    real: int
    latest_requests: int


def _run_id(hour: int, target: str) -> str:
    """Like `new_run_id`'s (sortable start time, a suffix), but deterministic."""
    stamp = (EPOCH + timedelta(hours=hour)).strftime("%Y%m%dT%H%M%SZ")
    suffix = zlib.crc32(f"{hour}-{target}".encode()) & 0xFFFFFF
    return f"{stamp}-{suffix:06x}"


def generate(data_dir: Path, spec: History) -> None:
    """Write the history unless `data_dir` already holds this exact one."""
    from tests.eventgen import RunSpec, write_runs
    from tests.results_factory import earlier_runs

    marker = data_dir / "bench.json"
    wanted = spec.__dict__
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    started = time.perf_counter()
    first_real = spec.runs - spec.real
    specs = []
    for s in range(spec.scenarios):
        scenario = ("chat", "long", "tools")[s]
        for t, (target, model) in enumerate(TARGETS[: spec.targets]):
            for hour in range(first_real, spec.runs):
                latest = hour == spec.runs - 1
                requests = 120
                if latest:  # one short latest run (a few seconds), the others long
                    requests = 20 if t == 0 else spec.latest_requests
                specs.append(
                    RunSpec(
                        run_id=_run_id(hour, f"{scenario}-{target}"),
                        scenario=scenario,
                        target=target,
                        model=model,
                        requests=requests,
                        concurrency=4,
                        ttft_ms=(30.0, 80.0, 50.0)[t],
                        itl_ms=(6.0, 20.0, 10.0)[t],
                        error_rate=(0.0, 0.08, 0.02)[t],
                        start=EPOCH + timedelta(hours=hour, minutes=5 * s + t),
                        seed=hour * 10 + t,
                    )
                )
    write_runs(EventLog(data_dir), specs, batch_rows=50_000)
    run_aggregate(data_dir, PRICES.get)
    layout = Layout(data_dir)
    real = pl.read_parquet(layout.results)
    older = earlier_runs(real, first_real) if first_real else real.clear()
    write_output(open_store(data_dir), pl.concat([older, real]), RESULTS, KEYS)
    run_profile(data_dir, TrendSettings())
    run_recommend(data_dir, RecommendSettings(), CompareSettings())
    marker.write_text(json.dumps(wanted))
    print(f"built the history in {time.perf_counter() - started:.1f}s", file=sys.stderr)


def measure(code: Path, data_dir: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `pipeline report` run by the code in `code`."""
    # The code in `code` first on the path (an editable install's finder comes after it), run
    # from outside any source tree (`-c` puts the working directory first).
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [
        sys.executable,
        "-c",
        "import sys, stages.report, pipeline.cli.entry as e; "
        f"assert stages.report.__file__.startswith({str(code)!r}), stages.report.__file__; "
        "sys.argv = ['pipeline', *sys.argv[1:]]; e.main()",
        "-q",
        "--data-dir",
        str(data_dir),
        "report",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=out.parent, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{code}: pipeline report failed")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="24,720,8760", help="runs per target, comma-separated")
    parser.add_argument("--targets", type=int, default=3)
    parser.add_argument("--scenarios", type=int, default=1)
    parser.add_argument("--real", type=int, default=6, help="real (event) runs per target")
    parser.add_argument("--latest-requests", type=int, default=50_000)
    parser.add_argument("--before", type=Path, help="a source tree of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="where the histories go (kept for reuse)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="report-bench-"))
    codes = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"polars {pl.__version__}",
        file=sys.stderr,
    )
    rows = []
    for runs in (int(n) for n in args.runs.split(",")):
        spec = History(
            runs, args.targets, args.scenarios, min(args.real, runs), args.latest_requests
        )
        data_dir = work / f"runs-{runs}-t{args.targets}-s{args.scenarios}"
        # In a process of its own: a child forked from a parent that had built the history
        # would start with the parent's memory in its peak RSS (Linux keeps it across exec).
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(generate, data_dir, spec).result()
        times: dict[str, list[float]] = {name: [] for name, _ in codes}
        rss: dict[str, float] = {name: 0.0 for name, _ in codes}
        size: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, code in codes:
                out = work / f"{name}-{runs}.html"
                seconds, peak = measure(code, data_dir, out)
                times[name].append(seconds)
                rss[name] = max(rss[name], peak)
                size[name] = out.stat().st_size
        for name, _ in codes:
            rows.append(
                (
                    name,
                    runs,
                    args.targets * args.scenarios,
                    min(times[name]),
                    statistics.median(times[name]),
                    rss[name],
                    size[name] / 1e6,
                )
            )
    print(
        "| code | runs per target | targets × scenarios | best s | median s | peak RSS MB | page MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs, keys, best, median, peak, mb in rows:
        print(f"| {name} | {runs:,} | {keys} | {best:.2f} | {median:.2f} | {peak:.0f} | {mb:.2f} |")


if __name__ == "__main__":
    main()
