"""Runs every selected scenario against every selected target and records it all as events.

The order of a run: check everything that can be checked before a request is sent (scenario
overrides, capabilities, API keys: a bad input exits 2 with nothing sent), then for each
scenario × target in turn: a `runs` started event, the load (warmup, then the measured requests),
a `runs` finished event with the final status. SIGINT/SIGTERM and the scenario's
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
import secrets
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Protocol

import httpx
import psutil
import trio
from pydantic import ValidationError

from pipeline.config import LoadedConfig, format_validation_error
from pipeline.errors import ConfigError, InvalidNameError, WorkerFailedError
from pipeline.store.eventlog import EventLog
from schemas import (
    SCHEMA_VERSION,
    BenchmarkScenario,
    TargetConfig,
    check_safe_name,
    event_id,
    get_provider,
)
from stages.execute.calibration import (
    CALIBRATION_PROMPTS,
    CALIBRATION_SLOTS,
    calibrate,
    calibration_json,
)
from stages.execute.capacity import Saturation, default_workers, saturation
from stages.execute.load import LoadPlan, LocalCounter, plan_load
from stages.execute.pair import LoadOutcome, PairLoad, Stop, run_measured, run_warmup
from stages.execute.providers import ProviderSettings, api_key_env, build_provider
from stages.execute.recorder import Clock, Recorder
from stages.execute.resources import ResourceSampler
from stages.execute.summary import PairResult, PairStats
from stages.execute.workers import run_in_workers

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "ExecuteOptions",
    "ExecuteResult",
    "PreparedRun",
    "ProgressFactory",
    "ProgressHandle",
    "TransportFactory",
    "environment",
    "execute",
    "new_run_id",
    "prepare",
    "run_prepared",
]

DEFAULT_REQUEST_TIMEOUT_S = 60.0
"""Per-request timeout when a target sets none (capped by the scenario's timeout_duration)."""


class ProgressHandle(Protocol):
    def update(self, **fields: Any) -> None: ...


ProgressFactory = Callable[[str, int | None], AbstractContextManager[ProgressHandle]]
"""`factory(description, total)`: a context manager whose handle takes `completed=`, `status=`."""
TransportFactory = Callable[[TargetConfig], httpx.AsyncBaseTransport | None]


@dataclass(frozen=True)
class ExecuteOptions:
    """The command line's overrides; None leaves the scenario's own value."""

    scenarios: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    requests: int | None = None
    concurrency: int | None = None
    rate: float | None = None
    duration_s: float | None = None
    seed: int | None = None
    workers: int | None = None
    """Worker processes per pair; None: `stages.execute.capacity.default_workers`."""


@dataclass(frozen=True)
class PreparedRun:
    """One scenario × target, checked and planned, ready to send."""

    scenario: BenchmarkScenario
    target: TargetConfig
    prompts: tuple[str, ...]
    config_hash: str
    plan: LoadPlan
    request_timeout_s: float
    api_key: str | None = field(default=None, repr=False)
    workers: int = 1
    """Processes that play the load; 1 runs it in this process's own loop."""
    secret_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The target's secret headers with their values (from the environment, in memory only)."""
    calibration: Mapping[int, int] = field(default_factory=dict)
    """Prompt index → input tokens as the target counted them (`calibrate_tokens`)."""

    def settings(
        self, concurrency: int, transport: httpx.AsyncBaseTransport | None = None
    ) -> ProviderSettings:
        """What the target's client is built from, for a share of the concurrency."""
        return ProviderSettings(
            self.target,
            self.api_key,
            concurrency,
            self.request_timeout_s,
            transport,
            secret_headers=self.secret_headers,
        )


@dataclass(frozen=True)
class ExecuteResult:
    run_id: str
    status: str
    """completed | interrupted | timed_out (some pair timed out) | failed."""
    seed: int
    data_dir: str
    pairs: list[PairResult]

    @property
    def exit_code(self) -> int:
        return 130 if self.status == "interrupted" else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "seed": self.seed,
            "data_dir": self.data_dir,
            "results": [p.as_dict() for p in self.pairs],
        }


def new_run_id(now: datetime | None = None) -> str:
    """`20261127T031500Z-1a2b3c`: sortable by start time, unique by its random suffix."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _override(scenario: BenchmarkScenario, options: ExecuteOptions) -> BenchmarkScenario:
    updates: dict[str, Any] = {}
    if options.requests is not None:
        updates["expected_operations"] = options.requests
    if options.concurrency is not None:
        updates["concurrency_level"] = options.concurrency
    if options.rate is not None:
        updates["rate"] = options.rate
    if options.duration_s is not None:
        updates["duration"] = options.duration_s
    if not updates:
        return scenario
    try:
        return BenchmarkScenario.model_validate({**scenario.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(format_validation_error("command line", exc, [scenario.name])) from None


def _request_timeout(scenario: BenchmarkScenario, target: TargetConfig) -> float:
    if target.request_timeout is not None:
        return target.request_timeout.total_seconds()
    return min(DEFAULT_REQUEST_TIMEOUT_S, scenario.timeout_duration.total_seconds())


def _workers(scenario: BenchmarkScenario, target: TargetConfig, requested: int | None) -> int:
    """The explicit count, else the capacity rule; never more than the concurrency.

    The in-process `mock` provider always runs in one process: it has no network client to
    spread, and its `concurrency_limit` is one process's state.
    """
    if target.provider == "mock":
        return 1
    if requested is None:
        requested = default_workers(
            scenario.concurrency_level,
            scenario.max_tokens,
            scenario.streaming_required,
            scenario.rate,
            os.cpu_count(),
        )
    return max(1, min(requested, scenario.concurrency_level))


def prepare(
    config: LoadedConfig, options: ExecuteOptions, environ: Mapping[str, str] | None = None
) -> tuple[list[PreparedRun], int]:
    """Check and plan every pair before anything is sent; raise ConfigError (exit 2) if unfit."""
    env = os.environ if environ is None else environ
    scenarios = [_override(s, options) for s in config.select_scenarios(options.scenarios)]
    targets = config.select_targets(options.targets)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    keys: dict[str, str | None] = {}
    headers: dict[str, dict[str, str]] = {}
    for target in targets:
        kind = get_provider(target.provider)
        if kind.factory is None:
            raise ConfigError(f"target {target.name!r}: provider {kind.name!r} has no client")
        variable, required = api_key_env(target)
        value = env.get(variable) if variable else None
        if required and not value:
            raise ConfigError(
                f"target {target.name!r} needs an API key: set the environment variable "
                f"{variable} (named by api_key_env), or choose other targets with --target"
            )
        keys[target.name] = value or None
        headers[target.name] = {}
        for header, variable in target.secret_headers.items():
            if not env.get(variable):
                raise ConfigError(
                    f"target {target.name!r}: secret_headers.{header} needs the environment "
                    f"variable {variable}, which is not set"
                )
            headers[target.name][header] = env[variable]
    runs: list[PreparedRun] = []
    for scenario in scenarios:
        prompts = tuple(config.prompts(scenario))
        for target in targets:
            kind = get_provider(target.provider)
            for needed, has in (("streaming", kind.streaming), ("tools", kind.tools)):
                if getattr(scenario, f"{needed}_required") and not has:
                    raise ConfigError(
                        f"scenario {scenario.name!r} requires {needed}, which target "
                        f"{target.name!r} (provider {kind.name!r}) does not support"
                    )
            if scenario.tool_choice not in (None, "auto") and not kind.tool_choice:
                raise ConfigError(
                    f"scenario {scenario.name!r} sets tool_choice = {scenario.tool_choice!r}, "
                    f"which target {target.name!r} (provider {kind.name!r}) cannot send"
                )
            runs.append(
                PreparedRun(
                    scenario=scenario,
                    target=target,
                    prompts=prompts,
                    config_hash=config.config_hash(scenario, target),
                    plan=plan_load(scenario, len(prompts), seed),
                    request_timeout_s=_request_timeout(scenario, target),
                    api_key=keys[target.name],
                    workers=_workers(scenario, target, options.workers),
                    secret_headers=headers[target.name],
                )
            )
    return runs, seed


def environment() -> dict[str, Any]:
    """Where the run happened, recorded with every `runs` event."""
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
    transport: httpx.AsyncBaseTransport | None,
    outcome: LoadOutcome,
) -> None:
    """The whole load in this process's loop (one worker): the small-run path, no spawning."""
    plan = run.plan
    pair = PairLoad(
        run,
        build_provider(run.settings(plan.concurrency, transport)),
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
                await run_warmup(pair, counter, plan.concurrency)
                schedule = zip(range(plan.warmup, plan.total), plan.arrivals_s, strict=True)
                await run_measured(pair, counter, plan.concurrency, schedule, perf_counter_ns())
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


async def _calibrated(
    run: PreparedRun, stop: Stop, transport: httpx.AsyncBaseTransport | None
) -> PreparedRun:
    """`run` with the target's own input-token counts of its prompts (`calibrate_tokens`); a
    signal during calibration ends it like the load (`stop.scope`)."""
    provider = build_provider(run.settings(CALIBRATION_SLOTS, transport))
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
    transport: httpx.AsyncBaseTransport | None,
) -> PairResult:
    scenario, target, plan = run.scenario, run.target, run.plan
    clock = recorder.clock
    # An injected transport (tests) lives in this process only: such a run stays in-process.
    workers = run.workers if transport is None else 1
    recorder.set_pair(scenario.name, target.name, target.provider, target.model)
    calibration = None
    if target.calibrate_tokens:
        run = await _calibrated(run, stop, transport)
        asked = min(CALIBRATION_PROMPTS, len(set(plan.prompt_indexes)))
        calibration = calibration_json(dict(run.calibration), asked)
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
        **env_info,
    }
    await recorder.write_run(
        {
            **base,
            "event_id": event_id(run_id, scenario.name, target.name, "started"),
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
        with progress(label, plan.total) as handle:
            async with trio.open_nursery() as ticker:
                ticker.start_soon(_tick, handle, stats)
                if workers == 1:
                    await _play_here(run, recorder, stop, stats, transport, outcome)
                else:
                    data_dir = Path(recorder.writer.log.data_dir)
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
                "event_id": event_id(run_id, scenario.name, target.name, "finished"),
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
    data_dir: Path,
    run_id: str,
    seed: int,
    *,
    progress: ProgressFactory | None = None,
    transport_factory: TransportFactory | None = None,
    handle_signals: bool = True,
) -> ExecuteResult:
    """Run the prepared pairs in order inside trio; stop early on SIGINT/SIGTERM."""
    recorder = Recorder(EventLog(data_dir).writer(run_id), Clock())
    stop = Stop()
    env_info = environment()
    results: list[PairResult] = []
    async with trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(_watch_signals, stop)
        for run in runs:
            if stop.interrupted:
                break
            transport = transport_factory(run.target) if transport_factory else None
            results.append(
                await _run_pair(
                    run, run_id, recorder, stop, env_info, progress or _no_progress, transport
                )
            )
        nursery.cancel_scope.cancel()
    if stop.interrupted:
        status = "interrupted"
    elif any(r.status == "timed_out" for r in results):
        status = "timed_out"
    else:
        status = "completed"
    return ExecuteResult(run_id, status, seed, str(data_dir), results)


def execute(
    config: LoadedConfig,
    data_dir: Path,
    options: ExecuteOptions,
    *,
    progress: ProgressFactory | None = None,
    transport_factory: TransportFactory | None = None,
    run_id: str | None = None,
) -> ExecuteResult:
    """Check, then run every selected scenario × target; the whole of `pipeline execute`."""
    runs, seed = prepare(config, options)
    run_id = run_id or new_run_id()
    try:
        check_safe_name(run_id)
    except ValueError as exc:
        raise InvalidNameError(f"run_id: {exc}") from None
    try:
        return trio.run(
            partial(
                run_prepared,
                runs,
                data_dir,
                run_id,
                seed,
                progress=progress,
                transport_factory=transport_factory,
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
