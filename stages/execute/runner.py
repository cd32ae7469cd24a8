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
from dataclasses import dataclass, field
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
from pipeline.errors import ConfigError, InvalidNameError
from pipeline.eventlog import EventLog
from schemas import BenchmarkScenario, TargetConfig, check_safe_name, event_id, get_provider
from stages.execute.load import LoadPlan, plan_load, run_closed, run_open
from stages.execute.providers import (
    Attempt,
    Provider,
    ProviderSettings,
    RequestSpec,
    api_key_env,
    build_provider,
)
from stages.execute.recorder import Clock, Recorder
from stages.execute.resources import InFlight, ResourceSampler
from stages.execute.summary import PairResult, PairStats
from stages.execute.taxonomy import RETRYABLE

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
MAX_BACKOFF_S = 60.0
_SENSITIVE_HEADER = ("authorization", "key", "token", "secret", "cookie", "auth")


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


def prepare(
    config: LoadedConfig, options: ExecuteOptions, environ: Mapping[str, str] | None = None
) -> tuple[list[PreparedRun], int]:
    """Check and plan every pair before anything is sent; raise ConfigError (exit 2) if unfit."""
    env = os.environ if environ is None else environ
    scenarios = [_override(s, options) for s in config.select_scenarios(options.scenarios)]
    targets = config.select_targets(options.targets)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    keys: dict[str, str | None] = {}
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
            runs.append(
                PreparedRun(
                    scenario=scenario,
                    target=target,
                    prompts=prompts,
                    config_hash=config.config_hash(scenario, target),
                    plan=plan_load(scenario, len(prompts), seed),
                    request_timeout_s=_request_timeout(scenario, target),
                    api_key=keys[target.name],
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


def _public_target(target: TargetConfig) -> str:
    data = target.public_dict()
    headers = data.get("headers") or {}
    data["headers"] = {
        k: ("***" if any(s in k.lower() for s in _SENSITIVE_HEADER) else v)
        for k, v in headers.items()
    }
    return json.dumps(data, sort_keys=True)


class _Stop:
    """Why the current run should end early, and the scope to cancel for it."""

    def __init__(self) -> None:
        self.interrupted = False
        self.signal_name = ""
        self.scope: trio.CancelScope | None = None

    def interrupt(self, name: str) -> None:
        self.interrupted = True
        self.signal_name = self.signal_name or name
        if self.scope is not None:
            self.scope.cancel()


async def _watch_signals(stop: _Stop, *, task_status: trio.TaskStatus[None]) -> None:
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


def _backoff(attempt_no: int, retry_after_s: float | None, rng: random.Random) -> float:
    """The server's retry-after when given (capped), else exponential with jitter."""
    if retry_after_s is not None:
        return min(MAX_BACKOFF_S, retry_after_s)
    base = min(MAX_BACKOFF_S, 0.5 * 2.0 ** (attempt_no - 1))
    return base * (0.5 + rng.random() / 2)


@dataclass
class _Pair:
    """Everything one scenario × target run shares while it runs."""

    run: PreparedRun
    provider: Provider
    recorder: Recorder
    stop: _Stop
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
        spec = RequestSpec(
            prompt=run.prompts[run.plan.prompt_indexes[index]],
            max_tokens=scenario.max_tokens,
            stream=scenario.streaming_required,
            tools=scenario.tools_required,
            system_prompt=scenario.system_prompt,
            request_index=index,
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
                    attempt.fail(
                        "timeout", f"no complete response within {run.request_timeout_s:g}s"
                    )
            except trio.Cancelled:
                reason = (
                    f"run interrupted ({self.stop.signal_name})"
                    if self.stop.interrupted
                    else "run timed out"
                )
                attempt.fail("cancelled", f"cancelled: {reason}")
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
            await trio.sleep(_backoff(attempt_no, attempt.retry_after_s, self.rng))
            attempt_no += 1
            scheduled_ns = perf_counter_ns()
        self.stats.finished += 1

    def dropped(self, index: int, scheduled_ns: int) -> None:
        """An open-loop request that was due but never got a slot before the run ended."""
        attempt = Attempt()
        attempt.fail("cancelled", "cancelled before it was sent (waiting for a concurrency slot)")
        spec = RequestSpec("", 0, self.run.scenario.streaming_required)
        self.record(index, 1, scheduled_ns, attempt, spec)


async def _load(pair: _Pair) -> None:
    plan = pair.run.plan
    if plan.warmup:
        await run_closed(range(plan.warmup), plan.concurrency, pair.send)
    if plan.mode == "closed":
        await run_closed(
            range(plan.warmup, plan.total), plan.concurrency, pair.send, _duration_deadline(pair)
        )
    else:
        await run_open(plan.warmup, plan.arrivals_s, plan.concurrency, pair.send, pair.dropped)


def _duration_deadline(pair: _Pair) -> float | None:
    duration = pair.run.scenario.duration
    return trio.current_time() + duration.total_seconds() if duration else None


async def _tick(handle: ProgressHandle, stats: PairStats) -> None:
    while True:
        handle.update(completed=stats.finished, status=stats.status_line())
        await trio.sleep(0.25)


async def _run_pair(
    run: PreparedRun,
    run_id: str,
    recorder: Recorder,
    stop: _Stop,
    env_info: Mapping[str, Any],
    progress: ProgressFactory,
    transport: httpx.AsyncBaseTransport | None,
) -> PairResult:
    scenario, target, plan = run.scenario, run.target, run.plan
    clock = recorder.clock
    recorder.set_pair(scenario.name, target.name, target.provider, target.model)
    base: dict[str, Any] = {
        "schema_version": 1,
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
        "workers": 1,
        "config_hash": run.config_hash,
        "scenario_config": json.dumps(scenario.model_dump(mode="json"), sort_keys=True),
        "target_config": _public_target(target),
        **env_info,
    }
    await recorder.write_run(
        {
            **base,
            "event_id": event_id(run_id, scenario.name, target.name, "started"),
            "kind": "started",
            "at": clock.utc_us(perf_counter_ns()),
            "status": "running",
        }
    )
    settings = ProviderSettings(
        target, run.api_key, plan.concurrency, run.request_timeout_s, transport
    )
    pair = _Pair(
        run, build_provider(settings), recorder, stop, rng=random.Random(f"backoff:{plan.seed}")
    )
    sampler = ResourceSampler(recorder, pair.in_flight)
    status, message = "completed", None
    failure: BaseException | None = None
    label = f"{scenario.name} × {target.name}"
    try:
        with progress(label, plan.total) as handle:
            async with trio.open_nursery() as background:
                background.start_soon(recorder.flush_every)
                background.start_soon(sampler.run)
                background.start_soon(_tick, handle, pair.stats)
                with trio.CancelScope() as load_scope:
                    stop.scope = load_scope
                    load_scope.deadline = (
                        trio.current_time() + scenario.timeout_duration.total_seconds()
                    )
                    if stop.interrupted:
                        load_scope.cancel()
                    await _load(pair)
                stop.scope = None
                if load_scope.cancelled_caught:
                    status = "interrupted" if stop.interrupted else "timed_out"
                    message = (
                        f"stopped by {stop.signal_name}"
                        if stop.interrupted
                        else f"timeout_duration {scenario.timeout_duration.total_seconds():g}s reached"
                    )
                handle.update(completed=pair.stats.finished, status=pair.stats.status_line())
                background.cancel_scope.cancel()
    except Exception as exc:  # noqa: BLE001 - recorded as the run's failure, then re-raised
        status, message, failure = "failed", f"{type(exc).__name__}: {exc}"[:500], exc
    finally:
        stop.scope = None
        with trio.CancelScope(shield=True):
            await pair.provider.aclose()
            sampler.sample()
            await recorder.flush()
            finished = {
                **base,
                "event_id": event_id(run_id, scenario.name, target.name, "finished"),
                "kind": "finished",
                "at": clock.utc_us(perf_counter_ns()),
                "status": status,
                "requests_sent": pair.sent,
                "message": message,
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
    return PairResult.from_stats(
        pair.stats,
        scenario=scenario.name,
        target=target.name,
        provider=target.provider,
        model=target.model,
        status=status,
        peak_rss_bytes=sampler.peak_rss,
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
    stop = _Stop()
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
