"""Playing one scenario × target's load in this process: send, retry, record, stop.

Both ways of running a pair use this: the runner in-process (one worker) and each worker
process (its share of the plan). `PairLoad.send` is the whole life of one request: its attempts,
the timeout of each, the backoff between retries, and one recorded row per attempt, including
the attempt cut short when the run is stopped (recorded as cancelled, then re-raised).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING

import trio

from stages.execute.client.providers import Attempt, Provider, RequestSpec
from stages.execute.client.taxonomy import RETRYABLE
from stages.execute.load.loops import IndexCounter, run_closed, run_open, trio_time_at
from stages.execute.record.recorder import Recorder
from stages.execute.record.resources import InFlight
from stages.execute.record.summary import PairStats

if TYPE_CHECKING:
    from stages.execute.load.plan import LoadPlan, PreparedRun

__all__ = [
    "MAX_BACKOFF_S",
    "LoadOutcome",
    "PairLoad",
    "Stop",
    "backoff",
    "run_measured",
    "run_warmup",
]

MAX_BACKOFF_S = 60.0


class Stop:
    """Why the current run should end early, and the scope to cancel for it."""

    def __init__(self) -> None:
        self.interrupted = False
        self.signal_name = ""
        self.timed_out = False
        self.scope: trio.CancelScope | None = None

    def interrupt(self, name: str) -> None:
        """A signal (or the parent, for a worker) asked the run to stop: no further pair starts."""
        self.interrupted = True
        self.signal_name = self.signal_name or name
        self.cancel()

    def cancel(self) -> None:
        """End the current load now."""
        if self.scope is not None:
            self.scope.cancel()

    def time_out(self) -> None:
        """End the current load because the scenario's timeout_duration was reached."""
        self.timed_out = True
        self.cancel()

    def reason(self) -> str:
        """Why an attempt in flight was cancelled: a signal, the pair's timeout, or else a
        failure elsewhere in the run (the store, a worker) that tore the load down."""
        if self.interrupted:
            return f"run interrupted ({self.signal_name})"
        scope = self.scope
        if self.timed_out or (scope is not None and trio.current_time() >= scope.deadline):
            return "run timed out"
        return "the run failed (see its finished event)"


@dataclass
class LoadOutcome:
    """What playing a pair's load did, in one process or many: for its `runs` finished event."""

    workers: int = 1
    sent: int = 0
    peak_rss: int = 0
    """The largest RSS sampled; with worker processes, the sum of each one's largest."""
    cpu: list[list[tuple[int, int]]] = field(default_factory=list)
    """Per process, its (perf_counter_ns, CPU µs) samples: the saturation verdict's input."""
    lags: list[list[int]] = field(default_factory=list)
    """Per process, how late (µs) its sampler woke, sample by sample."""
    failure: str | None = None
    """Why the pair failed (a worker died or raised); None when it did not."""
    cut_short: bool = False
    """The load was stopped early (a signal or the timeout; `Stop` says which)."""


def backoff(attempt_no: int, retry_after_s: float | None, rng: random.Random) -> float:
    """The server's retry-after when given (capped), else exponential with jitter."""
    if retry_after_s is not None:
        return min(MAX_BACKOFF_S, retry_after_s)
    base = min(MAX_BACKOFF_S, 0.5 * 2.0 ** (attempt_no - 1))
    return base * (0.5 + rng.random() / 2)


@dataclass
class PairLoad:
    """Everything one process's part of a scenario × target run shares while it runs."""

    run: PreparedRun
    provider: Provider
    recorder: Recorder
    stop: Stop
    stats: PairStats = field(default_factory=PairStats)
    in_flight: InFlight = field(default_factory=InFlight)
    rng: random.Random = field(default_factory=random.Random)
    sent: int = 0

    def record(
        self, index: int, attempt_no: int, scheduled_ns: int, attempt: Attempt, spec: RequestSpec
    ) -> None:
        now = perf_counter_ns()
        if not attempt.start_ns:
            attempt.start_ns = now
        if attempt.ok or attempt.chunk_ns:
            attempt.finish_tokens(spec)
        warmup = index < self.run.plan.warmup
        self.recorder.add_request(
            request_index=index,
            prompt_index=self.run.plan.prompt_indexes[index],
            attempt_no=attempt_no,
            warmup=warmup,
            streaming=spec.stream,
            scheduled_ns=scheduled_ns,
            attempt=attempt,
        )
        self.stats.add(attempt, warmup)

    async def send(self, index: int, scheduled_ns: int) -> None:
        """One request: its attempts (retries when the target allows), each recorded."""
        run = self.run
        scenario = run.scenario
        prompt_index = run.plan.prompt_indexes[index]
        spec = RequestSpec(
            prompt=run.prompts[prompt_index],
            max_tokens=scenario.max_tokens,
            stream=scenario.streaming_required,
            tools=scenario.tools_required,
            system_prompt=scenario.system_prompt,
            request_index=index,
            tool_choice=scenario.tool_choice,
            calibrated_input=run.calibration.get(prompt_index),
        )
        attempt_no = 1
        while True:
            attempt = Attempt()
            self.in_flight.value += 1
            self.sent += 1
            try:
                with trio.move_on_after(run.request_timeout_s) as deadline:
                    await self.provider.send(spec, attempt)
                if deadline.cancelled_caught:
                    attempt.fail("timeout", self._timeout_message(spec, attempt))
            except trio.Cancelled:
                attempt.fail("cancelled", f"cancelled: {self.stop.reason()}")
                if not attempt.end_ns:
                    attempt.end_ns = perf_counter_ns()
                self.record(index, attempt_no, scheduled_ns, attempt, spec)
                raise
            finally:
                self.in_flight.value -= 1
            self.record(index, attempt_no, scheduled_ns, attempt, spec)
            retryable = attempt.error_type in RETRYABLE
            if attempt.ok or not retryable or attempt_no > run.target.max_retries:
                break
            await trio.sleep(backoff(attempt_no, attempt.retry_after_s, self.rng))
            attempt_no += 1
            scheduled_ns = perf_counter_ns()
        if index >= run.plan.warmup:  # the progress bar counts what the table counts
            self.stats.finished += 1

    def _timeout_message(self, spec: RequestSpec, attempt: Attempt) -> str:
        """Why an attempt timed out, with the likely cause when the server streamed more
        content chunks than the token cap allows (it ignored the field the cap went in)."""
        message = f"no complete response within {self.run.request_timeout_s:g}s"
        chunks = len(attempt.chunk_ns)
        if spec.stream and chunks > spec.max_tokens:
            message += (
                f" ({chunks} content chunks for max_tokens {spec.max_tokens}: the server seems "
                "to ignore the token cap; see the target's max_tokens_field)"
            )
        return message

    def dropped(self, index: int, scheduled_ns: int) -> None:
        """An open-loop request that was due but never got a slot before the run ended."""
        attempt = Attempt()
        attempt.fail("cancelled", "cancelled before it was sent (waiting for a concurrency slot)")
        spec = RequestSpec("", 0, self.run.scenario.streaming_required)
        self.record(index, 1, scheduled_ns, attempt, spec)


def _own(plan: LoadPlan, positions: Iterator[int]) -> Iterator[int]:
    """The request indexes at `positions` of this runner's share (the counter counts positions,
    so with `--shard` it walks i, i + N, ... while a lone runner's positions are the indexes)."""
    indexes = plan.indexes
    return (indexes[position] for position in positions)


async def run_warmup(pair: PairLoad, counter: IndexCounter, slots: int) -> None:
    """The warmup requests, closed loop, indexes drawn from `counter` (shared across workers)."""
    plan = pair.run.plan
    if plan.own_warmup:
        await run_closed(_own(plan, counter.take(plan.own_warmup)), slots, pair.send)


async def run_measured(
    pair: PairLoad,
    counter: IndexCounter,
    slots: int,
    schedule: Iterable[tuple[int, float]],
    start_ns: int,
) -> None:
    """The measured requests from `start_ns`: closed from `counter`, or open by `schedule`."""
    plan = pair.run.plan
    if plan.mode == "closed":
        duration = pair.run.scenario.duration
        deadline = trio_time_at(start_ns) + duration.total_seconds() if duration else None
        indexes = _own(plan, counter.take(len(plan.indexes)))
        await run_closed(indexes, slots, pair.send, deadline)
    else:
        await run_open(schedule, slots, pair.send, pair.dropped, start_ns)
