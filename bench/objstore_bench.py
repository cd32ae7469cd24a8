"""How fast is `pipeline aggregate` reading its events from an object store, next to a local folder?

The same N synthetic request events (`aggregate_bench.generate`: tests/eventgen.py's runs,
written through the real EventLog) are aggregated by the whole `run_aggregate` twice, each time
in a fresh subprocess (its peak RSS its own):

- local: the data dir is a folder on this machine's disk (the page cache warm);
- s3: the data dir is `s3://bench/<prefix>` on a local S3: moto's server on 127.0.0.1
  (`tests/s3_server.py`), the events uploaded once, byte for byte the same files.

Both write their outputs (locally under the lock; on S3 as content-addressed objects and a
pointer swapped by compare-and-swap). moto is a Python server in front of an in-memory bucket,
so the s3 figure measures our reads over HTTP through obstore plus moto's own cost, not AWS:
a real S3 is farther away per request and faster per byte. The cases take turns, `--rounds`
times; the table shows each one's best and median time and its largest peak RSS.

    python bench/objstore_bench.py                      # 1M events
    python bench/objstore_bench.py --events 10000000    # 10M events (~1.7 GB uploaded)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from bench.aggregate_bench import generate, peak_rss  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from stages.aggregate.run import run_aggregate  # noqa: E402
from tests import s3_server  # noqa: E402

CASES = ("local", "s3")
BUCKET = "bench"


def start_s3() -> tuple[subprocess.Popen[str], str]:
    """moto's server on 127.0.0.1, and the AWS variables pointing at it (children inherit)."""
    proc, endpoint = s3_server.spawn(str(ROOT))
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    import httpx

    httpx.put(f"{endpoint}/{BUCKET}").raise_for_status()
    return proc, endpoint


def upload(data_dir: Path, url: str) -> tuple[int, int, float]:
    """Copy every event file of `data_dir` to the same keys under `url`: (files, bytes, seconds)."""
    import obstore

    from pipeline.store.objstore import ObjectStore

    client = ObjectStore.from_url(url).client
    files = sorted(p for p in (data_dir / "events").rglob("*.arrow"))
    started = time.perf_counter()

    def put(path: Path) -> int:
        data = path.read_bytes()
        obstore.put(client, path.relative_to(data_dir).as_posix(), data, use_multipart=False)
        return len(data)

    with ThreadPoolExecutor(4) as pool:
        size = sum(pool.map(put, files))
    return len(files), size, time.perf_counter() - started


def measure(location: str, repeat: int) -> None:
    """Child process: `run_aggregate` `repeat` times; print the times and the peak RSS as JSON."""
    price = load_config(cwd=ROOT).price
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run_aggregate(location, price).total_rows
        times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "rows": rows, "peak_rss_bytes": peak_rss()}))


def child(location: str, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", location, "--repeat", str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2, help="Runs per case and round.")
    parser.add_argument("--rounds", type=int, default=2, help="Turns each case takes.")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.repeat)
        return
    data_dir = Path(tempfile.gettempdir()) / f"aggregate-bench-{args.events}-{args.runs}"
    events = generate(data_dir, args.events, args.runs)
    server, _ = start_s3()
    try:
        url = f"s3://{BUCKET}/events-{args.events}"
        files, size, took = upload(data_dir, url)
        print(f"uploaded {files} files, {size / 2**20:,.0f} MB in {took:.1f}s", file=sys.stderr)
        where = {"local": str(data_dir), "s3": url}
        rounds = [{c: child(where[c], args.repeat) for c in CASES} for _ in range(args.rounds)]
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert len({got[c]["rows"] for got in rounds for c in CASES}) == 1, "results differ"
    times = {case: [t for got in rounds for t in got[case]["times"]] for case in CASES}
    print(
        f"{events:,} request events in {files} files ({size / 2**20:,.0f} MB), {args.runs} runs; "
        f"polars {pl.__version__}; {os.cpu_count()} cpus; {platform.machine()}; "
        f"{args.rounds} rounds x {args.repeat} runs per case"
    )
    print(f"{'data dir':<10} {'best s':>7} {'median s':>9} {'events/s':>12} {'peak RSS':>10}")
    for case in CASES:
        best = min(times[case])
        rss = max(got[case]["peak_rss_bytes"] for got in rounds)
        print(
            f"{case:<10} {best:>7.2f} {statistics.median(times[case]):>9.2f} "
            f"{events / best:>12,.0f} {rss / 2**20:>7,.0f} MB"
        )
    print(f"s3 / local (best): {min(times['s3']) / min(times['local']):.2f}x")


if __name__ == "__main__":
    main()
