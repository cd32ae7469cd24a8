"""How a load is played: a closed loop at a fixed concurrency, or an open loop of timed arrivals.

Closed loop (no `rate`): `concurrency` workers each send their next request as soon as the
previous one ends, the way a pool of users would. Open loop (`rate`): requests are due at the
arrival times of the plan (`load.plan`), whether or not earlier ones have finished; at most
`concurrency` are in flight, and a due request that must wait for a slot keeps its due time as
`scheduled_at`, so its queueing delay shows as `queue_us` instead of vanishing (coordinated
omission). With worker processes, a closed loop draws its indexes from one counter they share
(so the concurrency is kept until the last index, as in one process).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from time import perf_counter_ns
from typing import Protocol

import trio

__all__ = [
    "DropFn",
    "IndexCounter",
    "LocalCounter",
    "SendFn",
    "run_closed",
    "run_open",
    "trio_time_at",
]

SendFn = Callable[[int, int], Awaitable[None]]
"""`send(request_index, scheduled_ns)`: scheduled_ns is the perf_counter_ns when it was due."""
DropFn = Callable[[int, int], None]
"""`dropped(request_index, scheduled_ns)`: a due request cancelled while it waited for a slot."""


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
