"""A session of `execute`: every prepared pair in turn, each recorded as events.

The order of a run: everything is checked and planned first (`load.plan.prepare`: a bad input
exits 2 with nothing sent), then for each scenario × target in turn: a `runs` started event, the
load (warmup, then the measured requests, in this process or in worker processes), a `runs`
finished event with the final status. SIGINT/SIGTERM and the scenario's
`timeout_duration` end a run the same way: scheduling stops, requests in flight are cancelled and
recorded as `cancelled`, the buffers are flushed, and the run is marked interrupted (no further
pair starts; exit 130) or timed_out (the next pair runs).

One `run_id` (UTC start + random hex) covers the whole invocation, so results group by
(run_id, scenario, target). The API key is read here from its variable, handed to the client in
memory, and never written: the recorded target is its public form with auth-like headers masked.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from importlib import metadata
from time import perf_counter_ns
from typing import Any, Protocol

import psutil
import trio

from pipeline.config import LoadedConfig
from pipeline.errors import InvalidNameError, PreflightError, WorkerFailedError
from pipeline.store.clock import store_clock_offset_us
from pipeline.store.eventlog import EventLog
from pipeline.store.location import Location
from schemas import (
    SCHEMA_VERSION,
    check_safe_name,
    event_id,
)
from stages.execute.calibration import (
    CALIBRATION_PROMPTS,
    CALIBRATION_SLOTS,
    calibrate,
    calibration_json,
)
from stages.execute.client.providers import build_provider
from stages.execute.load.loops import LocalCounter
from stages.execute.load.pair import LoadOutcome, PairLoad, Stop, run_measured, run_warmup
from stages.execute.load.plan import ExecuteOptions, PreparedRun, Shard, new_run_id, prepare
from stages.execute.preflight import check_target, checked_runs
from stages.execute.record.capacity import Saturation, saturation
from stages.execute.record.recorder import Clock, Recorder
from stages.execute.record.resources import ResourceSampler
from stages.execute.record.summary import PairResult, PairStats
from stages.execute.shared import check_unplayed, wait_until
from stages.execute.workers.parent import run_in_workers

__all__ = [
    "ExecuteResult",
    "ProgressFactory",
    "ProgressHandle",
    "describe",
    "environment",
    "execute",
    "run_prepared",
]


class ProgressHandle(Protocol):
    def update(self, **fields: Any) -> None: ...


ProgressFactory = Callable[[str, int | None], AbstractContextManager[ProgressHandle]]
"""`factory(description, total)`: a context manager whose handle takes `completed=`, `status=`."""


@dataclass(frozen=True)
class ExecuteResult:
    run_id: str
    status: str
    """completed | interrupted | timed_out (some pair timed out) | failed."""
    seed: int
    data_dir: str
    pairs: list[PairResult]
    warnings: list[str] = field(default_factory=list)
    """What the pre-flight check found that did not stop the run (a 5xx, a 429, ...)."""
    shard: Shard | None = None
    """This runner's share when runners share the run (its `status` is the shard's own)."""

    @property
    def failed_targets(self) -> list[str]:
        """Targets none of whose measured attempts succeeded, in any of their pairs."""
        succeeded: dict[str, bool] = {}
        for pair in self.pairs:
            succeeded[pair.target] = succeeded.get(pair.target, False) or pair.ok > 0
        return [target for target, ok in succeeded.items() if not ok]

    @property
    def exit_code(self) -> int:
        """130 interrupted; 4 when some target answered nothing right (a cron job's alarm: the
        events still say why); else 0, however many requests failed."""
        if self.status == "interrupted":
            return 130
        return 4 if self.failed_targets else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "seed": self.seed,
            "data_dir": self.data_dir,
            "results": [p.as_dict() for p in self.pairs],
            "failed_targets": self.failed_targets,
            "warnings": self.warnings,
            "shard": None if self.shard is None else str(self.shard),
        }


def environment() -> dict[str, Any]:
    """Where the run happened, recorded with every `runs` event (`clock_offset_us` is added
    by `run_prepared`, which knows the store)."""
    try:
        version = metadata.version("llm-bench-pipeline")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpus": os.cpu_count() or 0,
        "memory_bytes": int(psutil.virtual_memory().total),
        "package_version": version,
        "host": socket.gethostname(),
    }


def describe(exc: BaseException) -> str:
    """`Type: message` of a failure, of the real errors inside exception groups (one line)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(describe(inner) for inner in exc.exceptions))
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _watch_signals(stop: Stop, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            stop.interrupt(signal.Signals(signum).name)


class _NoProgress:
    def update(self, **fields: Any) -> None:
        return None


@contextmanager
def _no_progress(description: str, total: int | None) -> Iterator[ProgressHandle]:
    yield _NoProgress()


async def _tick(handle: ProgressHandle, stats: PairStats) -> None:
    while True:
        handle.update(completed=stats.finished, status=stats.status_line())
        await trio.sleep(0.25)


async def _play_here(
    run: PreparedRun,
    recorder: Recorder,
    stop: Stop,
    stats: PairStats,
    outcome: LoadOutcome,
) -> None:
    """The whole load in this process's loop (one worker): the small-run path, no spawning."""
    plan = run.plan
    pair = PairLoad(
        run,
        build_provider(run.settings(plan.slots)),
        recorder,
        stop,
        stats=stats,
        rng=random.Random(f"backoff:{plan.seed}"),
    )
    sampler = ResourceSampler(recorder, pair.in_flight)
    try:
        async with trio.open_nursery() as background:
            background.start_soon(recorder.flush_every)
            background.start_soon(sampler.run)
            with trio.CancelScope() as load_scope:
                stop.scope = load_scope
                load_scope.deadline = (
                    trio.current_time() + run.scenario.timeout_duration.total_seconds()
                )
                if stop.interrupted:
                    load_scope.cancel()
                counter = LocalCounter()
                await run_warmup(pair, counter, plan.slots)
                schedule = plan.schedule()
                await run_measured(pair, counter, plan.slots, schedule, perf_counter_ns())
            stop.scope = None
            outcome.cut_short = load_scope.cancelled_caught
            background.cancel_scope.cancel()
    finally:
        stop.scope = None
        with trio.CancelScope(shield=True):
            await pair.provider.aclose()
            sampler.sample()
            await recorder.flush()
            outcome.sent, outcome.peak_rss = pair.sent, sampler.peak_rss
            outcome.cpu, outcome.lags = [sampler.cpu], [sampler.lags]


def _status(run: PreparedRun, stop: Stop, outcome: LoadOutcome) -> tuple[str, str | None]:
    if outcome.failure is not None:
        return "failed", outcome.failure
    if stop.interrupted:
        return "interrupted", f"stopped by {stop.signal_name}"
    if outcome.cut_short:
        timeout = run.scenario.timeout_duration.total_seconds()
        return "timed_out", f"timeout_duration {timeout:g}s reached"
    return "completed", None


async def _calibrated(run: PreparedRun, stop: Stop) -> PreparedRun:
    """`run` with the target's own input-token counts of its prompts (`calibrate_tokens`); a
    signal during calibration ends it like the load (`stop.scope`)."""
    provider = build_provider(run.settings(CALIBRATION_SLOTS))
    found: dict[int, int] = {}
    try:
        with trio.CancelScope() as scope:
            stop.scope = scope
            if stop.interrupted:
                scope.cancel()
            found = await calibrate(
                provider, run.scenario, run.prompts, run.plan.prompt_indexes, run.request_timeout_s
            )
    finally:
        stop.scope = None
        with trio.CancelScope(shield=True):
            await provider.aclose()
    return replace(run, calibration=found)


async def _run_pair(
    run: PreparedRun,
    run_id: str,
    recorder: Recorder,
    stop: Stop,
    env_info: Mapping[str, Any],
    progress: ProgressFactory,
    tags: Mapping[str, Any],
) -> PairResult:
    scenario, target, plan = run.scenario, run.target, run.plan
    clock = recorder.clock
    workers = run.workers
    recorder.set_pair(scenario.name, target.name, target.provider, target.model)
    calibration = None
    if target.calibrate_tokens:
        run = await _calibrated(run, stop)
        asked = min(CALIBRATION_PROMPTS, len(set(plan.prompt_indexes)))
        calibration = calibration_json(dict(run.calibration), asked)
    shard = plan.shard
    # A shard's run records are its own (unsharded runs keep the ids they always had).
    id_tail: tuple[object, ...] = () if shard is None else (f"shard {shard.index}",)
    base: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "scenario": scenario.name,
        "target": target.name,
        "provider": target.provider,
        "model": target.model,
        "mode": plan.mode,
        "concurrency": plan.concurrency,
        "planned_requests": plan.total,
        "rate": plan.rate,
        "seed": plan.seed,
        "workers": workers,
        "config_hash": run.config_hash,
        "scenario_config": json.dumps(scenario.model_dump(mode="json"), sort_keys=True),
        "target_config": json.dumps(target.public_dict(), sort_keys=True),
        "shard": None if shard is None else shard.index,
        "shards": None if shard is None else shard.count,
        **env_info,
        **tags,
    }
    await recorder.write_run(
        {
            **base,
            "event_id": event_id(run_id, scenario.name, target.name, "started", *id_tail),
            "kind": "started",
            "at": clock.utc_us(perf_counter_ns()),
            "status": "running",
            "token_calibration": calibration,
        }
    )
    stats = PairStats()
    outcome = LoadOutcome(workers=workers)
    failure: BaseException | None = None
    status, message = "failed", None
    verdict = Saturation(None, None)
    label = f"{scenario.name} × {target.name}"
    try:
        with progress(label, plan.own_requests) as handle:
            async with trio.open_nursery() as ticker:
                ticker.start_soon(_tick, handle, stats)
                if workers == 1:
                    await _play_here(run, recorder, stop, stats, outcome)
                else:
                    data_dir = recorder.writer.log.store.location  # the workers reopen it
                    timeout_s = scenario.timeout_duration.total_seconds()
                    await run_in_workers(
                        run, run_id, data_dir, clock, workers, stop, stats, timeout_s, outcome
                    )
                handle.update(completed=stats.finished, status=stats.status_line())
                ticker.cancel_scope.cancel()
        status, message = _status(run, stop, outcome)
    except Exception as exc:  # noqa: BLE001 - recorded as the run's failure, then re-raised
        status, message, failure = "failed", describe(exc)[:500], exc
    finally:
        verdict = saturation(outcome.cpu, outcome.lags)
        with trio.CancelScope(shield=True):
            finished = {
                **base,
                "event_id": event_id(run_id, scenario.name, target.name, "finished", *id_tail),
                "kind": "finished",
                "at": clock.utc_us(perf_counter_ns()),
                "status": status,
                "requests_sent": outcome.sent,
                "message": message,
                "client_cpu_saturation": verdict.share,
                "client_saturated": verdict.saturated,
                "client_loop_lag_p95_ms": verdict.lag_p95_ms,
            }
            if failure is None:
                await recorder.write_run(finished)
            else:
                try:
                    await recorder.write_run(finished)
                except Exception:  # noqa: BLE001 - the original failure is the one to report
                    pass
    if failure is not None:
        raise failure
    if outcome.failure is not None:
        raise WorkerFailedError(
            f"{label}: {outcome.failure}; the run {run_id} is recorded as failed"
        )
    return PairResult.from_stats(
        stats,
        scenario=scenario.name,
        target=target.name,
        provider=target.provider,
        model=target.model,
        status=status,
        peak_rss_bytes=outcome.peak_rss,
        workers=workers,
        client_cpu_saturation=verdict.share,
        client_saturated=verdict.saturated,
        client_loop_lag_p95_ms=verdict.lag_p95_ms,
    )


async def run_prepared(
    runs: list[PreparedRun],
    data_dir: Location,
    run_id: str,
    seed: int,
    *,
    progress: ProgressFactory | None = None,
    handle_signals: bool = True,
    preflight: bool = False,
    start_at: datetime | None = None,
    tags: Mapping[str, Any] | None = None,
) -> ExecuteResult:
    """Run the prepared pairs in order inside trio; stop early on SIGINT/SIGTERM. With
    `preflight` (execute's default), check every target first (`stages.execute.preflight`);
    with `start_at`, wait for that instant before the first pair (shards begin together).
    `tags`: extra `RunEvent` fields for both records of every pair (a sweep's id and step)."""
    stop = Stop()
    shard = runs[0].plan.shard if runs else None
    env_info = environment()
    results: list[PairResult] = []
    warnings: list[str] = []
    async with trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(_watch_signals, stop)
        if preflight:
            warnings = await _preflight(runs, stop)
        # After the pre-flight: a run it stops leaves no data directory behind.
        env_info["clock_offset_us"] = store_clock_offset_us(data_dir)
        if start_at is not None:
            env_info["start_at"] = start_at
            late = await wait_until(start_at, stop)
            if late > 1.0:
                warnings.append(
                    f"warning: --start-at {start_at.isoformat()} was {late:.1f}s ago when this "
                    "runner was ready; it started at once (the shards did not begin together)"
                )
        writer = "w0" if shard is None else shard.writer(0)
        log = EventLog(data_dir)
        recorder = Recorder(
            log.writer(run_id, writer), Clock(), shard=None if shard is None else shard.index
        )
        for run in runs:
            if stop.interrupted:
                break
            results.append(
                await _run_pair(
                    run, run_id, recorder, stop, env_info, progress or _no_progress, tags or {}
                )
            )
        nursery.cancel_scope.cancel()
    if stop.interrupted:
        status = "interrupted"
    elif any(r.status == "timed_out" for r in results):
        status = "timed_out"
    else:
        status = "completed"
    return ExecuteResult(run_id, status, seed, log.store.location, results, warnings, shard)


async def _preflight(runs: list[PreparedRun], stop: Stop) -> list[str]:
    """Check every target at once; raise PreflightError naming each one that cannot answer,
    else return a line for each that answered badly. A signal ends the checks like the load."""
    checked = checked_runs(runs)
    found: dict[str, str] = {}
    fatal: list[str] = []

    async def check(run: PreparedRun) -> None:
        result = await check_target(run)
        if result.error_type is not None:
            line = result.describe(run)
            if result.fatal:
                fatal.append(line)
            else:
                found[run.target.name] = f"warning: {line} (running anyway)"

    with trio.CancelScope() as scope:
        stop.scope = scope
        if stop.interrupted:
            scope.cancel()
        try:
            async with trio.open_nursery() as nursery:
                for run in checked:
                    nursery.start_soon(check, run)
        finally:
            stop.scope = None
    if fatal:
        raise PreflightError(
            "\n".join(fatal)
            + "\nnothing was measured and no event written; fix the target, or run anyway "
            "with --no-preflight"
        )
    return [found[run.target.name] for run in checked if run.target.name in found]


def execute(
    config: LoadedConfig,
    data_dir: Location,
    options: ExecuteOptions,
    *,
    progress: ProgressFactory | None = None,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> ExecuteResult:
    """Check, then run every selected scenario × target; the whole of `pipeline execute`.
    `tags` go on every `runs` record (see `run_prepared`)."""
    run_id = run_id or options.run_id
    if run_id is not None:
        try:
            check_safe_name(run_id)
        except ValueError as exc:
            raise InvalidNameError(f"run_id: {exc}") from None
        options = replace(options, run_id=run_id)
    elif options.shard is not None:
        raise InvalidNameError(
            f"--shard {options.shard} needs --run-id: every shard must write into the same run"
        )
    runs, seed = prepare(config, options)
    if run_id is not None:
        check_unplayed(data_dir, run_id, options.shard)
    run_id = run_id or new_run_id()
    try:
        return trio.run(
            partial(
                run_prepared,
                runs,
                data_dir,
                run_id,
                seed,
                progress=progress,
                preflight=options.preflight,
                start_at=options.start_at,
                tags=tags,
            )
        )
    except BaseExceptionGroup as group:
        raise _sole(group) from None


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside nested nursery groups (so a StoreError keeps its exit code)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
