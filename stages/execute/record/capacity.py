"""The client's CPU budget: how many worker processes a run needs, and whether it was enough.

A benchmark client that runs short of CPU reports its own queueing as the server's latency.
Two rules keep that honest, one before the run and one after:

* `default_workers` (before): the expected CPU of the run, from the measured cost of our client
  (`REQUEST_CPU_US` per request, `CHUNK_CPU_US` per streamed chunk, docs/accuracy.md) and the
  expected request and chunk rates, divided by `WORKER_BUDGET` of a core per worker, rounded up,
  and capped by the CPU count and the concurrency. A stream is assumed to deliver
  `ASSUMED_CHUNK_RATE` chunks/s (the client cannot know a server's speed in advance); an open
  loop cannot exceed its `rate`. A small run gets 1: no process it does not need.
* `saturation` (after): from the `samples` (CPU time every ~100 ms, per process), the share of
  the run during which a process used more than `BUSY_SHARE` of a core; the run is flagged
  when any process was that busy for more than `SATURATED_SHARE` of it. A loop that busy delays
  reading sockets, so the timings it took are inflated by its own queueing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ASSUMED_CHUNK_RATE",
    "BUSY_SHARE",
    "CHUNK_CPU_US",
    "MIN_JUDGED_S",
    "REQUEST_CPU_US",
    "SATURATED_SHARE",
    "WORKER_BUDGET",
    "Saturation",
    "client_capacity_rps",
    "default_workers",
    "expected_cpu",
    "request_cpu_us",
    "saturation",
]

REQUEST_CPU_US = 450.0
"""CPU of one streamed request outside its chunks (send, headers, row): measured 380-470 µs at
64 streams against a zero-latency mock (docs/accuracy.md, 2026-11-27; was 700)."""
CHUNK_CPU_US = 55.0
"""CPU of one SSE chunk that arrives in its own network read (wake-up, read, HTTP framing, SSE
framing, stamp): measured 54-59 µs with paced tokens (docs/accuracy.md, 2026-11-27; chunks that
share a read cost 3-9 µs each). The old 30 µs was not measured per read."""
ASSUMED_CHUNK_RATE = 100.0
"""Chunks per second one stream is assumed to deliver (a fast hosted model; the mock's default)."""
WORKER_BUDGET = 0.5
"""Share of a core one worker is planned to use: headroom keeps its event loop prompt."""
BUSY_SHARE = 0.9
"""A sampling interval in which a process used more than this share of a core counts as busy."""
SATURATED_SHARE = 0.2
"""A run is flagged when some process was busy for more than this share of its sampled time."""
MIN_JUDGED_S = 1.0
"""A process sampled for less than this is not judged: in a run that short (a target refusing
every connection ends in milliseconds) start-up work fills the only interval, which said
"CPU-saturated for 100% of the run" of runs that did nothing."""
LAGGING_MS = 10.0
"""`execute` warns when a client process's event loop ran this late (p95) or later: its
timestamps can be up to that much late too. Measured (docs/accuracy.md): 1-2.6 ms on a free
loop (trio's timer rounding), 6-7.6 ms with 2 workers and the mock server sharing 2 cores at 64
and 100 streams."""


def request_cpu_us(max_tokens: int, streaming: bool) -> float:
    """The client's measured CPU for one request of `max_tokens` (µs, see the docstring)."""
    chunks = max_tokens + 2 if streaming else 1  # content chunks, then usage and the end marker
    return REQUEST_CPU_US + chunks * CHUNK_CPU_US


def expected_cpu(
    concurrency: int, max_tokens: int, streaming: bool, rate: float | None = None
) -> float:
    """Cores the client is expected to need for a load (see the module docstring)."""
    rps = concurrency * ASSUMED_CHUNK_RATE / max(1, max_tokens)
    if rate is not None:
        rps = min(rps, rate)
    return rps * request_cpu_us(max_tokens, streaming) / 1e6


def client_capacity_rps(max_tokens: int, streaming: bool, cores: int) -> float:
    """The most requests/s the client can drive on `cores` whole cores at its measured cost
    per request: a sweep refuses a rate above it (the timings would be the client's queue)."""
    return max(1, cores) * 1e6 / request_cpu_us(max_tokens, streaming)


def default_workers(
    concurrency: int,
    max_tokens: int,
    streaming: bool,
    rate: float | None = None,
    cpus: int | None = None,
) -> int:
    """Worker processes for a load: enough for `WORKER_BUDGET` each, within CPUs and slots."""
    need = math.ceil(expected_cpu(concurrency, max_tokens, streaming, rate) / WORKER_BUDGET)
    return max(1, min(need, cpus or 1, concurrency))


@dataclass(frozen=True)
class Saturation:
    """The verdict on one run's client CPU, recorded on its `runs` finished event."""

    share: float | None
    """Largest share (0..1) of sampled time any process spent above `BUSY_SHARE` of a core."""
    saturated: bool | None
    """share > `SATURATED_SHARE`: the client was too busy for its timings to be trusted."""
    lag_p95_ms: float | None = None
    """The largest p95, over the processes, of how late each one's sampler woke (ms): the
    time its event loop could not run. High with little CPU use means other processes starve
    the client (`LAGGING_MS`)."""


def _busy_share(samples: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(busy ns, sampled ns) of one process's (mono_ns, cpu_us) samples, in time order."""
    busy = total = 0
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        span = t1 - t0
        if span <= 0:
            continue
        total += span
        if (c1 - c0) * 1000 > BUSY_SHARE * span:
            busy += span
    return busy, total


def saturation(
    per_process: Iterable[Sequence[tuple[int, int]]], lags: Iterable[Sequence[int]] = ()
) -> Saturation:
    """The saturation verdict from each process's (mono_ns, cumulative CPU µs) samples, and the
    loop lag from each process's sampler lags (µs).

    Null when no process was sampled for `MIN_JUDGED_S` (a run too short to judge).
    """
    lag_p95 = max((_p95(lag) / 1000 for lag in lags if lag), default=None)
    shares = []
    for samples in per_process:
        busy, total = _busy_share(sorted(samples))
        if total >= MIN_JUDGED_S * 1e9:
            shares.append(busy / total)
    if not shares:
        return Saturation(None, None, lag_p95)
    share = max(shares)
    return Saturation(share, share > SATURATED_SHARE, lag_p95)


def _p95(values: Sequence[int]) -> float:
    """The nearest-rank 95th percentile (a value that occurred)."""
    ordered = sorted(values)
    return float(ordered[math.ceil(0.95 * len(ordered)) - 1])
