"""One worker process: its own trio loop, httpx lanes and event files, playing its share.

Started by `stages.execute.workers.parent` with the "spawn" context (a fresh interpreter: no trio
state is ever forked). The parent owns every decision about time and stopping; the worker only
obeys, over its pipe (the messages: `stages.execute.workers.messages`).

Request indexes come from one counter in shared memory (closed loop and warmup), so each index
is sent once by whichever slot is free first in any process; an open loop's arrivals are dealt
by `schedule_share`. The worker ignores SIGINT/SIGTERM (a terminal's Ctrl-C reaches the whole
process group): the parent forwards the stop, so in-flight requests are recorded as cancelled
with the signal's name, as in one process. If the parent vanishes, the pipe's end stops it.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import TYPE_CHECKING

import trio

from pipeline.store.eventlog import EventLog
from stages.execute.client.providers import build_provider
from stages.execute.load.pair import PairLoad, Stop, run_measured, run_warmup
from stages.execute.load.plan import schedule_share
from stages.execute.record.recorder import Clock, Recorder
from stages.execute.record.resources import ResourceSampler
from stages.execute.record.summary import PairStats
from stages.execute.workers.messages import (
    Done,
    Failed,
    Go,
    Halt,
    PhaseDone,
    Progress,
    Ready,
    WorkerReport,
    receive,
)

if TYPE_CHECKING:
    from stages.execute.load.plan import PreparedRun

__all__ = ["SharedCounter", "WorkerJob", "worker_main"]

STATS_INTERVAL_S = 0.25
"""How often a worker reports its progress (the parent's progress bar)."""


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs, pickled to it at spawn (the API key only ever in memory)."""

    run: PreparedRun
    run_id: str
    data_dir: str
    worker: int
    """1..N: the `worker` column and the writer name `w<N>` (the parent's runs use w0)."""
    slots: tuple[int, ...]
    """Every worker's share of the concurrency (index worker-1 is this one's)."""
    clock_anchor: tuple[int, int]


class SharedCounter:
    """The `IndexCounter` shared by all workers: a locked int64 in shared memory."""

    def __init__(self, value: Synchronized[int]) -> None:
        self._value = value

    def take(self, stop_at: int) -> Iterator[int]:
        value = self._value
        while True:
            with value.get_lock():  # held for an increment: microseconds, never across an await
                index = value.value
                if index >= stop_at:
                    return
                value.value = index + 1
            yield index


async def _listen(conn: Connection, stop: Stop, phases: trio.MemorySendChannel[Go]) -> None:
    while True:
        match await receive(conn):
            case None:
                stop.interrupt("parent exited")
                return
            case Go() as go:
                await phases.send(go)
            case Halt() as halt if halt.timed_out:
                stop.time_out()
            case Halt(reason=reason):
                stop.interrupt(reason)
            case other:
                raise TypeError(f"a worker cannot take {other!r:.80}")


async def _report(conn: Connection, stats: PairStats) -> None:
    while True:
        await trio.sleep(STATS_INTERVAL_S)
        conn.send(Progress(stats.delta()))


async def _play(job: WorkerJob, conn: Connection, counter: SharedCounter) -> None:
    run = job.run
    scenario, target = run.scenario, run.target
    slots = job.slots[job.worker - 1]
    shard = run.plan.shard
    name = f"w{job.worker}" if shard is None else shard.writer(job.worker)
    writer = EventLog(job.data_dir).writer(job.run_id, name)
    recorder = Recorder(
        writer,
        Clock(job.clock_anchor),
        worker=job.worker,
        shard=None if shard is None else shard.index,
    )
    recorder.set_pair(scenario.name, target.name, target.provider, target.model)
    stop = Stop()
    rng = random.Random(f"backoff:{run.plan.seed}:{job.worker}")
    pair = PairLoad(run, build_provider(run.settings(slots)), recorder, stop, rng=rng)
    sampler = ResourceSampler(recorder, pair.in_flight)
    schedule = schedule_share(run.plan, job.slots, job.worker - 1)
    phases_in, phases = trio.open_memory_channel[Go](2)
    try:
        async with trio.open_nursery() as background:
            background.start_soon(_listen, conn, stop, phases_in)
            background.start_soon(recorder.flush_every)
            background.start_soon(sampler.run)
            background.start_soon(_report, conn, pair.stats)
            conn.send(Ready())
            with trio.CancelScope() as scope:
                stop.scope = scope
                if stop.interrupted:
                    scope.cancel()
                while True:
                    go = await phases.receive()
                    if go.phase == "warmup":
                        await run_warmup(pair, counter, slots)
                        conn.send(PhaseDone(go.phase))
                    else:
                        await run_measured(pair, counter, slots, schedule, go.start_ns)
                        break
            stop.scope = None
            background.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await pair.provider.aclose()
            sampler.sample()
            await recorder.flush()
    report = WorkerReport(
        pair.sent, sampler.peak_rss, sampler.cpu, sampler.lags, pair.stats.delta()
    )
    conn.send(Done(report))


def worker_main(job: WorkerJob, conn: Connection, counter: Synchronized[int]) -> None:
    """The process's entry point (spawned): play the job, report, exit 0; else report and exit 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Started with both blocked (`workers._spawn`): what arrived meanwhile is now ignored.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        trio.run(_play, job, conn, SharedCounter(counter))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        error = exc
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        try:
            conn.send(Failed(f"{type(error).__name__}: {error}"[:500]))
        except OSError:
            pass
        raise SystemExit(1) from None
    finally:
        conn.close()
