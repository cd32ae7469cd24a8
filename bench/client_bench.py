"""How much does our client add to what it measures? Side by side with a plain httpx+trio loop.

Starts `pipeline mock-server` in its own process, pacing tokens by exact deadlines (TTFT 50 ms,
then 100 tokens/s = ITL 10 ms, 16 tokens: the last content chunk is due at 200 ms), and at
concurrency 1, 16, 64 and 100 reports TTFT p50 − 50 ms and latency p50 − 200 ms for:

- ours (auto): `pipeline execute` as a user runs it (workers from the default rule);
- ours (N=2): the same with `--workers 2` (where auto chose otherwise);
- plain: one process, one `httpx.AsyncClient` (pool = concurrency), `aiter_lines` + `json.loads`,
  the loop most people write; measured in the same run, so "ratio" is plain's error / ours.

Then the most requests/s and content chunks/s each client sustains against a zero-latency mock
(a second server process), with the server's CPU share (if it is ~100% the server is the limit).
Only 127.0.0.1; about 1-2 minutes. The machine is shared: read the ratios, not the absolutes.

    python bench/client_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from time import perf_counter_ns
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import polars as pl  # noqa: E402
import psutil  # noqa: E402
import trio  # noqa: E402

from pipeline.config import parse_config  # noqa: E402
from pipeline.store.eventlog import EventLog  # noqa: E402
from stages.execute.load.plan import ExecuteOptions  # noqa: E402
from stages.execute.session import execute  # noqa: E402

TTFT_MS, ITL_MS, TOKENS = 50.0, 10.0, 16
LATENCY_MS = TTFT_MS + (TOKENS - 1) * ITL_MS
LEVELS = (1, 16, 64, 100)


class Server:
    """`pipeline mock-server` in its own process on a free port of 127.0.0.1."""

    def __init__(self, *knobs: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "pipeline", "mock-server", "--port", "0", *knobs]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.strip().rsplit(" ", 1)[-1] + "/v1"
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def ours(url: str, concurrency: int, requests: int, workers: int | None) -> dict[str, Any]:
    """One `pipeline execute` pair (library call, same code path as the CLI)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = {
            "targets": [
                {"name": "srv", "provider": "openai-compatible", "model": "m", "base_url": url}
            ],
            "scenarios": [
                {
                    "name": "bench",
                    "test_prompts": ["Count to sixteen."],
                    "expected_operations": requests,
                    "concurrency_level": concurrency,
                    "warmup": concurrency,
                    "max_tokens": TOKENS,
                    "streaming_required": True,
                    "timeout_duration": "120s",
                }
            ],
            "default_scenarios": ["bench"],
        }
        config = parse_config(raw, "bench", Path(tmp))
        data = Path(tmp) / "data"
        result = execute(config, data, ExecuteOptions(seed=1, workers=workers))
        pair = result.pairs[0]
        frame = EventLog(data).replay("requests").collect().filter(~pl.col("warmup"))
        chunks = int(frame["chunk_offsets_us"].list.len().sum())
        return {
            "workers": pair.workers,
            "ttft": pair.ttft_p50_ms,
            "latency": pair.latency_p50_ms,
            "rps": pair.throughput_rps,
            "cps": chunks / pair.requests * (pair.throughput_rps or 0.0),
            "ok": pair.ok,
            "saturated": pair.client_saturated,
        }


async def _plain(url: str, concurrency: int, requests: int, warmup: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Count to sixteen."}],
        "max_tokens": TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ttfts: list[float] = []
    latencies: list[float] = []
    chunks = 0
    first = last = 0
    pending = iter(range(warmup + requests))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal chunks, first, last
            for index in pending:
                start = perf_counter_ns()
                ttft = None
                n = 0
                async with client.stream("POST", "chat/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        obj = json.loads(line[6:])
                        choices = obj.get("choices")
                        if choices and choices[0].get("delta", {}).get("content"):
                            n += 1
                            if ttft is None:
                                ttft = perf_counter_ns() - start
                end = perf_counter_ns()
                if index >= warmup:
                    first = first or start
                    last = max(last, end)
                    chunks += n
                    ttfts.append((ttft or 0) / 1e6)
                    latencies.append((end - start) / 1e6)

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    elapsed = (last - first) / 1e9
    return {
        "workers": 1,
        "ttft": statistics.median(ttfts),
        "latency": statistics.median(latencies),
        "rps": requests / elapsed,
        "cps": chunks / elapsed,
        "ok": len(ttfts),
        "saturated": None,
    }


def plain(url: str, concurrency: int, requests: int) -> dict[str, Any]:
    return trio.run(_plain, url, concurrency, requests, concurrency)


def _with_server_cpu(server: Server, run: Any) -> dict[str, Any]:
    """Run one client and add the server's CPU share meanwhile (~100%: the server is the limit)."""
    cpu0, t0 = server.cpu_s(), time.perf_counter()
    row: dict[str, Any] = run()
    row["server_cpu"] = (server.cpu_s() - cpu0) / (time.perf_counter() - t0)
    return row


def _fmt(value: float | None, width: int = 8, digits: int = 1) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def accuracy(quick: bool) -> None:
    server = Server("--latency", "50ms", "--token-rate", "100", "--output-tokens", str(TOKENS))
    try:
        print(f"\nTTFT / latency error (p50 minus configured {TTFT_MS:g} / {LATENCY_MS:g} ms)")
        print(
            f"{'conc':>5} {'client':<12} {'workers':>7} {'ttft+ms':>8} {'lat+ms':>8} "
            f"{'ratio':>6} {'n':>5} {'saturated':>9} {'server cpu':>10}"
        )
        for level in LEVELS:
            requests = max(30, 10 * level) if not quick else max(10, level)
            rows: list[tuple[str, dict[str, Any]]] = [
                ("plain", _with_server_cpu(server, partial(plain, server.url, level, requests))),
                (
                    "ours auto",
                    _with_server_cpu(server, partial(ours, server.url, level, requests, None)),
                ),
            ]
            if rows[1][1]["workers"] != 2 and level >= 2:
                rows.append(
                    (
                        "ours N=2",
                        _with_server_cpu(server, partial(ours, server.url, level, requests, 2)),
                    )
                )
            base_err = rows[0][1]["ttft"] - TTFT_MS
            for name, row in rows:
                err = row["ttft"] - TTFT_MS
                ratio = base_err / err if name != "plain" and err > 0 else None
                print(
                    f"{level:>5} {name:<12} {row['workers']:>7} {_fmt(err)} "
                    f"{_fmt(row['latency'] - LATENCY_MS)} {_fmt(ratio, 6)} {row['ok']:>5} "
                    f"{str(row['saturated']):>9} {row['server_cpu']:>9.0%}"
                )
    finally:
        server.close()


def throughput(quick: bool) -> None:
    server = Server("--latency", "0", "--token-rate", "1000000", "--output-tokens", str(TOKENS))
    try:
        print("\nZero-latency mock, concurrency 64: the most the client sustains")
        print(f"{'client':<12} {'workers':>7} {'req/s':>8} {'chunks/s':>9} {'server cpu':>10}")
        requests = 600 if quick else 2000
        for name, run in (
            ("plain", lambda: plain(server.url, 64, requests)),
            ("ours auto", lambda: ours(server.url, 64, requests, None)),
            ("ours N=2", lambda: ours(server.url, 64, requests, 2)),
        ):
            row = _with_server_cpu(server, run)
            print(
                f"{name:<12} {row['workers']:>7} {_fmt(row['rps'], 8, 0)} "
                f"{_fmt(row['cps'], 9, 0)} {row['server_cpu']:>9.0%}"
            )
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"client_bench {datetime.date.today()} · {platform.python_version()} · "
        f"{platform.machine()} · {os.cpu_count()} CPUs · load avg {os.getloadavg()[0]:.1f}"
    )
    accuracy(args.quick)
    throughput(args.quick)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
