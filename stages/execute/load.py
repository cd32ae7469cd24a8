"""Load shapes: a closed loop at a fixed concurrency, or an open loop of timed arrivals.

Closed loop (no `rate`): `concurrency` workers each send their next request as soon as the
previous one ends, the way a pool of users would. Open loop (`rate`): requests are due at
arrival times fixed in advance (constant spacing or Poisson, seeded, with an optional linear
ramp-up of the rate), whether or not earlier ones have finished; at most `concurrency` are in
flight, and a due request that must wait for a slot keeps its due time as `scheduled_at`, so its
queueing delay shows as `queue_us` instead of vanishing (coordinated omission).

The schedule is a pure function of (scenario, seed), so `--seed` reproduces arrivals and the
choice of prompts exactly; the runner only plays it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Literal

import trio

from schemas import BenchmarkScenario

__all__ = [
    "DropFn",
    "LoadPlan",
    "SendFn",
    "arrival_offsets",
    "plan_load",
    "run_closed",
    "run_open",
]

SendFn = Callable[[int, int], Awaitable[None]]
"""`send(request_index, scheduled_ns)`: scheduled_ns is the perf_counter_ns when it was due."""
DropFn = Callable[[int, int], None]
"""`dropped(request_index, scheduled_ns)`: a due request cancelled while it waited for a slot."""


def arrival_offsets(
    rate: float,
    arrival: Literal["constant", "poisson"],
    *,
    ramp_up_s: float = 0.0,
    duration_s: float | None = None,
    count: int | None = None,
    rng: random.Random | None = None,
) -> list[float]:
    """Due times (seconds from the start) of an open loop; stops at `duration_s`, else `count`.

    Arrivals are drawn on a unit-rate axis (k for constant, a sum of Exp(1) gaps for Poisson)
    and mapped through the inverse of the cumulative rate Λ(t), which rises linearly during the
    ramp-up and is `rate` after it. The ramp then shapes both kinds the same way.
    """
    if duration_s is None and count is None:
        raise ValueError("an open loop needs a duration or a count")
    rng = rng or random.Random(0)
    ramp = max(0.0, ramp_up_s)
    ramp_mass = rate * ramp / 2.0

    def due(s: float) -> float:
        if s < ramp_mass:
            return math.sqrt(2.0 * ramp * s / rate)
        return ramp + (s - ramp_mass) / rate

    out: list[float] = []
    s = 0.0 if arrival == "constant" else rng.expovariate(1.0)
    limit = count if count is not None else math.inf
    while len(out) < limit:
        t = due(s)
        if duration_s is not None and t >= duration_s:
            break
        out.append(t)
        s += 1.0 if arrival == "constant" else rng.expovariate(1.0)
    return out


@dataclass(frozen=True)
class LoadPlan:
    """What a run will send: warmup count, then the measured requests, and which prompt each gets."""

    mode: Literal["closed", "open"]
    concurrency: int
    warmup: int
    requests: int
    """Measured requests (closed: expected_operations; open: the arrivals in the schedule)."""
    arrivals_s: tuple[float, ...]
    prompt_indexes: tuple[int, ...]
    """Per request index (warmup first), the prompt it sends."""
    seed: int
    rate: float | None

    @property
    def total(self) -> int:
        return self.warmup + self.requests


def plan_load(scenario: BenchmarkScenario, prompts: int, seed: int) -> LoadPlan:
    """The schedule of one scenario: deterministic given the seed."""
    arrivals: list[float] = []
    if scenario.rate is not None:
        duration = scenario.duration.total_seconds() if scenario.duration else None
        arrivals = arrival_offsets(
            scenario.rate,
            scenario.arrival,
            ramp_up_s=scenario.ramp_up.total_seconds(),
            duration_s=duration,
            count=None if duration is not None else scenario.expected_operations,
            rng=random.Random(f"arrivals:{seed}"),
        )
        requests = len(arrivals)
    else:
        requests = scenario.expected_operations
    chooser = random.Random(f"prompts:{seed}")
    total = scenario.warmup + requests
    indexes = (
        tuple(chooser.randrange(prompts) for _ in range(total)) if prompts > 1 else (0,) * total
    )
    return LoadPlan(
        mode="open" if scenario.rate is not None else "closed",
        concurrency=scenario.concurrency_level,
        warmup=scenario.warmup,
        requests=requests,
        arrivals_s=tuple(arrivals),
        prompt_indexes=indexes,
        seed=seed,
        rate=scenario.rate,
    )


async def run_closed(
    indexes: Sequence[int], concurrency: int, send: SendFn, deadline: float | None = None
) -> None:
    """Send `indexes` with `concurrency` workers, each starting its next as its last one ends.

    With a `deadline` (trio time), no request starts after it (a closed loop with a duration).
    """
    pending = iter(indexes)

    async def worker() -> None:
        for index in pending:  # one shared iterator: each index is sent exactly once
            if deadline is not None and trio.current_time() >= deadline:
                return
            await send(index, perf_counter_ns())

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, len(indexes))):
            nursery.start_soon(worker)


async def run_open(
    first_index: int,
    arrivals_s: Sequence[float],
    concurrency: int,
    send: SendFn,
    dropped: DropFn | None = None,
) -> None:
    """Start request `first_index + i` at `arrivals_s[i]`; at most `concurrency` in flight."""
    limiter = trio.CapacityLimiter(concurrency)
    t0 = trio.current_time()
    base_ns = perf_counter_ns()

    async def limited(index: int, scheduled_ns: int) -> None:
        try:
            await limiter.acquire()
        except trio.Cancelled:
            if dropped is not None:
                dropped(index, scheduled_ns)
            raise
        try:
            await send(index, scheduled_ns)
        finally:
            limiter.release()

    async with trio.open_nursery() as nursery:
        for i, offset in enumerate(arrivals_s):
            await trio.sleep_until(t0 + offset)
            nursery.start_soon(limited, first_index + i, base_ns + round(offset * 1e9))
