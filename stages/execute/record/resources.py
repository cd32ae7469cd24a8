"""Samples the client's own resources during a run: RSS, CPU time, requests in flight.

A benchmark client that runs out of CPU or memory distorts what it measures; these samples make
that visible (and make the seed's peak memory a measured number). psutil reads are a few tens of
microseconds, cheap enough to take on the event loop every ~100 ms.
"""

from __future__ import annotations

from time import perf_counter_ns

import psutil
import trio

from stages.execute.record.recorder import Recorder

__all__ = ["InFlight", "ResourceSampler"]


class InFlight:
    """A counter of requests in flight, bumped by the runner around each attempt."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class ResourceSampler:
    """Appends a `samples` row every `interval_s` until cancelled; remembers the peak RSS."""

    def __init__(self, recorder: Recorder, in_flight: InFlight, interval_s: float = 0.1) -> None:
        self.recorder = recorder
        self.in_flight = in_flight
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.peak_rss = 0
        self.cpu: list[tuple[int, int]] = []
        """(perf_counter_ns, user + system CPU µs) of every sample, for the saturation verdict."""
        self.lags: list[int] = []
        """How late (µs) the sampler woke for each sample after the first."""

    def sample(self, lag_us: int | None = None) -> None:
        now = perf_counter_ns()
        rss = int(self.process.memory_info().rss)
        cpu = self.process.cpu_times()
        self.peak_rss = max(self.peak_rss, rss)
        user_us, system_us = int(cpu.user * 1e6), int(cpu.system * 1e6)
        self.cpu.append((now, user_us + system_us))
        if lag_us is not None:
            self.lags.append(lag_us)
        self.recorder.add_sample(now, rss, user_us, system_us, self.in_flight.value, lag_us)

    async def run(self) -> None:
        """Sample at once, then on absolute deadlines (no drift), until cancelled; each sample
        after the first records how late its deadline was met (the loop's lag)."""
        start = trio.current_time()
        tick = 0
        lag_us = None
        while True:
            self.sample(lag_us)
            tick += 1
            deadline = start + tick * self.interval_s
            await trio.sleep_until(deadline)
            lag_us = max(0, round((trio.current_time() - deadline) * 1e6))
