"""Running one scenario × target over N worker processes, from the parent's side.

The parent spawns the workers (`stages.execute.workers.child`), waits until every one is ready
(imports done, client built), then starts each phase in all of them at once: the warmup, then
the measured load from one shared start instant (so an open loop's schedule is one schedule).
It merges their progress for the bar, forwards a stop (a signal, or the scenario's timeout) to
all of them, and watches each process's sentinel: a worker that exits without its closing
report (killed, crashed) fails the pair at once; the survivors are stopped, and any worker that
does not finish within `STOP_GRACE_S` is killed, so the parent never hangs.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import trio

from stages.execute.load.pair import LoadOutcome, Stop
from stages.execute.load.plan import split_concurrency
from stages.execute.record.recorder import Clock
from stages.execute.record.summary import PairStats
from stages.execute.workers.child import WorkerJob, worker_main
from stages.execute.workers.messages import (
    Barrier,
    Done,
    Failed,
    Go,
    Halt,
    PhaseDone,
    Progress,
    Ready,
    ToWorker,
    WorkerReport,
    receive,
)

if TYPE_CHECKING:
    from stages.execute.load.plan import PreparedRun

__all__ = ["READY_TIMEOUT_S", "START_DELAY_S", "STOP_GRACE_S", "run_in_workers"]

START_DELAY_S = 0.02
"""The measured phase starts this long after the parent says go, in every worker at once."""
STOP_GRACE_S = 15.0
"""How long stopped workers get to record their cancelled requests and flush, before a kill."""
READY_TIMEOUT_S = 120.0
"""A worker that has not started within this long (a stuck import, a full machine) fails the run."""


class _Worker:
    __slots__ = ("conn", "done", "number", "process", "report")

    def __init__(self, number: int, process: BaseProcess, conn: Connection) -> None:
        self.number = number
        self.process = process
        self.conn = conn
        self.done = False
        self.report: WorkerReport | None = None


def _exit_text(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Group:
    """The parent's view of its workers: phase barriers, merged stats, the first failure."""

    def __init__(self, workers: list[_Worker], stats: PairStats, outcome: LoadOutcome) -> None:
        self.workers = workers
        self.stats = stats
        self.outcome = outcome
        self.waiting = {barrier: {w.number for w in workers} for barrier in Barrier}
        self.events = {barrier: trio.Event() for barrier in Barrier}
        self.failed = trio.Event()

    def arrived(self, barrier: Barrier, number: int) -> None:
        pending = self.waiting[barrier]
        pending.discard(number)
        if not pending:
            self.events[barrier].set()

    def fail(self, message: str) -> None:
        if self.outcome.failure is None:
            self.outcome.failure = message
        self.failed.set()

    def send(self, message: ToWorker) -> None:
        for worker in self.workers:
            if not worker.done:
                try:
                    worker.conn.send(message)
                except OSError:
                    pass  # it is gone; its listener reports how

    async def listen(self, worker: _Worker) -> None:
        while True:
            message = await receive(worker.conn)
            match message:
                case None:
                    break
                case Progress(delta=delta):
                    self.stats.merge(delta)
                case Ready():
                    self.arrived(Barrier.READY, worker.number)
                case PhaseDone():
                    self.arrived(Barrier.WARMUP, worker.number)
                case Done(report=report):
                    worker.report = report
                    self.stats.merge(report.stats)
                case Failed(message=text):
                    self.fail(f"worker {worker.number} failed: {text}")
                case _:
                    self.fail(f"worker {worker.number} sent {message!r:.80}")
        await trio.lowlevel.wait_readable(worker.process.sentinel)
        worker.process.join()
        if worker.report is None and self.outcome.failure is None:
            self.fail(
                f"worker {worker.number} (pid {worker.process.pid}) "
                f"{_exit_text(worker.process)} mid-run; its requests not yet flushed (up to ~1 s of them) are lost"
            )
        worker.done = True
        for barrier in Barrier:
            self.arrived(barrier, worker.number)

    async def wait(self, barrier: Barrier) -> None:
        """Until every worker reached `barrier` or one failed (then the caller stops them all)."""
        async with trio.open_nursery() as nursery:

            async def until(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until, self.events[barrier])
            nursery.start_soon(until, self.failed)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _spawn(jobs: Sequence[WorkerJob]) -> tuple[list[_Worker], Any]:
    """Start the workers with SIGINT and SIGTERM blocked: the mask survives the exec, so a
    Ctrl-C that reaches the process group while a worker still imports cannot kill it (it
    unblocks them once it ignores them; the parent forwards the stop instead)."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    workers = []
    for job in jobs:
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=worker_main,
            args=(job, child_end, counter),
            name=f"pipeline-execute-w{job.worker}",
            daemon=True,
        )
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()
        workers.append(_Worker(job.worker, process, parent_end))
    return workers, counter


async def run_in_workers(
    run: PreparedRun,
    run_id: str,
    data_dir: str,
    clock: Clock,
    count: int,
    stop: Stop,
    stats: PairStats,
    timeout_s: float,
    outcome: LoadOutcome,
) -> None:
    """Play `run` over `count` processes; `stats` gets their merged progress as it comes.

    Fills `outcome`; returns after every worker has exited. `stop.scope` is the load's scope while it runs, so a
    signal cancels it exactly as in one process; the scenario's timeout is `timeout_s`.
    """
    slots = tuple(split_concurrency(run.plan.slots, count))
    jobs = [WorkerJob(run, run_id, data_dir, n, slots, clock.anchor) for n in range(1, count + 1)]
    workers, _counter = _spawn(jobs)
    group = _Group(workers, stats, outcome)
    try:
        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(group.listen, worker)
            with trio.move_on_after(READY_TIMEOUT_S) as ready_scope:
                await group.wait(Barrier.READY)
            if ready_scope.cancelled_caught:
                group.fail(f"workers not ready within {READY_TIMEOUT_S:g}s")
            with trio.CancelScope() as load_scope:
                stop.scope = load_scope
                load_scope.deadline = trio.current_time() + timeout_s
                if stop.interrupted or group.failed.is_set():
                    load_scope.cancel()
                if run.plan.own_warmup:
                    group.send(Go("warmup", perf_counter_ns()))
                    await group.wait(Barrier.WARMUP)
                if not group.failed.is_set():
                    start_ns = perf_counter_ns() + int(START_DELAY_S * 1e9)
                    group.send(Go("measured", start_ns))
                    await group.wait(Barrier.DONE)
            stop.scope = None
            outcome.cut_short = load_scope.cancelled_caught
            if not group.events[Barrier.DONE].is_set():
                if stop.interrupted:
                    reason = stop.signal_name
                elif outcome.failure is not None:
                    reason = "another worker failed"
                else:
                    reason = "timeout"
                group.send(Halt(reason))
                with trio.CancelScope(shield=True) as grace:
                    grace.deadline = trio.current_time() + STOP_GRACE_S
                    await group.events[Barrier.DONE].wait()
                if grace.cancelled_caught:
                    group.fail(f"workers did not stop within {STOP_GRACE_S:g}s; killed")
                    for worker in workers:
                        if worker.process.is_alive():
                            worker.process.kill()
                    with trio.CancelScope(shield=True):
                        await group.events[Barrier.DONE].wait()
    finally:
        stop.scope = None
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
    for worker in workers:
        if worker.report is not None:
            outcome.sent += worker.report.sent
            outcome.peak_rss += worker.report.peak_rss
            outcome.cpu.append(worker.report.cpu)
            outcome.lags.append(worker.report.lags)
