"""Load shapes: a closed loop at a fixed concurrency, or an open loop of timed arrivals.

Closed loop (no `rate`): `concurrency` workers each send their next request as soon as the
previous one ends, the way a pool of users would. Open loop (`rate`): requests are due at
arrival times fixed in advance (constant spacing or Poisson, seeded, with an optional linear
ramp-up of the rate), whether or not earlier ones have finished; at most `concurrency` are in
flight, and a due request that must wait for a slot keeps its due time as `scheduled_at`, so its
queueing delay shows as `queue_us` instead of vanishing (coordinated omission).

The schedule is a pure function of (scenario, seed), so `--seed` reproduces arrivals and the
choice of prompts exactly; the runner only plays it. With worker processes the same schedule is
played by all of them: a closed loop draws indexes from one shared counter (so the concurrency
is kept until the last index, as in one process) and an open loop deals its arrivals out by
weight; the concurrency is split so the workers' slots sum to it exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Literal, Protocol

import trio

from schemas import BenchmarkScenario

__all__ = [
    "DropFn",
    "IndexCounter",
    "LoadPlan",
    "LocalCounter",
    "SendFn",
    "arrival_offsets",
    "plan_load",
    "run_closed",
    "run_open",
    "schedule_share",
    "split_concurrency",
    "trio_time_at",
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


def split_concurrency(concurrency: int, workers: int) -> list[int]:
    """Slots per worker, summing exactly to `concurrency` (the first ones get the remainder)."""
    base, extra = divmod(concurrency, workers)
    return [base + (1 if w < extra else 0) for w in range(workers)]


def schedule_share(plan: LoadPlan, slots: Sequence[int], worker: int) -> list[tuple[int, float]]:
    """Worker `worker`'s (request_index, due offset) pairs of the open-loop schedule.

    Arrivals are dealt by smooth weighted round robin over the workers' slots, so each worker
    gets a share of the arrivals proportional to its share of the concurrency cap, spread evenly
    in time. Every worker computes the same deal from the same plan: the shares are disjoint and
    their union is exactly the one-process schedule.
    """
    total = sum(slots)
    credit = [0] * len(slots)
    mine: list[tuple[int, float]] = []
    for i, offset in enumerate(plan.arrivals_s):
        for w, weight in enumerate(slots):
            credit[w] += weight
        chosen = max(range(len(slots)), key=credit.__getitem__)
        credit[chosen] -= total
        if chosen == worker:
            mine.append((plan.warmup + i, offset))
    return mine


class IndexCounter(Protocol):
    """Hands out request indexes in order, each once, to whoever asks next."""

    def take(self, stop_at: int) -> Iterator[int]:
        """Indexes from the current position up to (excluding) `stop_at`."""
        ...


class LocalCounter:
    """The one-process `IndexCounter`: a plain integer (trio tasks never race between awaits)."""

    __slots__ = ("value",)

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def take(self, stop_at: int) -> Iterator[int]:
        while self.value < stop_at:
            index = self.value
            self.value += 1
            yield index


def trio_time_at(mono_ns: int) -> float:
    """The trio clock's reading at the perf_counter_ns instant `mono_ns` (a shared start)."""
    return trio.current_time() + (mono_ns - perf_counter_ns()) / 1e9


async def run_closed(
    indexes: Iterable[int], concurrency: int, send: SendFn, deadline: float | None = None
) -> None:
    """Send `indexes` with `concurrency` workers, each starting its next as its last one ends.

    `indexes` is one shared iterator, so each index is sent exactly once whichever worker (or,
    with worker processes, whichever process) is free first. With a `deadline` (trio time), no
    request starts after it (a closed loop with a duration).
    """
    pending = iter(indexes)
    if isinstance(indexes, Sized):
        concurrency = min(concurrency, len(indexes))

    async def worker() -> None:
        for index in pending:
            if deadline is not None and trio.current_time() >= deadline:
                return
            await send(index, perf_counter_ns())

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def run_open(
    schedule: Iterable[tuple[int, float]],
    concurrency: int,
    send: SendFn,
    dropped: DropFn | None = None,
    start_ns: int | None = None,
) -> None:
    """Start each (request_index, offset) at `start_ns + offset`; at most `concurrency` in flight.

    `start_ns` (perf_counter_ns, default now) lets worker processes share one start instant.
    """
    limiter = trio.CapacityLimiter(concurrency)
    base_ns = perf_counter_ns() if start_ns is None else start_ns
    t0 = trio_time_at(base_ns)

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
        for index, offset in schedule:
            await trio.sleep_until(t0 + offset)
            nursery.start_soon(limited, index, base_ns + round(offset * 1e9))
