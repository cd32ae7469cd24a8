"""What a sweep will run: its options, their checks, and the series that picks each next load.

Everything that can be refused is refused here, before a request goes out (exit 2 naming the
option): a list that is empty, not increasing or out of range, a rate beyond what this machine's
client can drive (from its measured cost per request, `client_capacity_rps`), an automatic
bisection without an SLO. A series is a small state machine over the steps done so far: given
each finished step's outcome it names the next load, or None when the series is over, so the
runner stays a plain loop and the logic is testable without sending anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pipeline.config import LoadedConfig
from pipeline.errors import ConfigError
from schemas import BenchmarkScenario, Slo, TargetConfig
from stages.execute.load.plan import ExecuteOptions, override_scenario
from stages.execute.record.capacity import ASSUMED_CHUNK_RATE, client_capacity_rps, expected_cpu

__all__ = [
    "AUTO_RATE_STEPS",
    "Axis",
    "BisectSeries",
    "ListSeries",
    "Series",
    "StepOutcome",
    "SweepOptions",
    "SweepRateSeries",
    "check_sweep",
    "client_cores",
    "make_series",
    "step_options",
]

Axis = Literal["concurrency", "rate"]
MAX_CONCURRENCY = 100
"""The most in flight a scenario may hold (`concurrency_level`'s bound)."""
AUTO_RATE_STEPS = 5
"""Rate steps `--auto rate` spreads between the synchronous and the max-throughput rate."""
MAX_STEPS = 1000
"""More steps than this in one series is a mistake, not a sweep."""


@dataclass(frozen=True)
class SweepOptions:
    """The command line of `pipeline sweep`; None leaves the scenario's own value."""

    scenario: str
    targets: tuple[str, ...] = ()
    axis: Axis = "concurrency"
    loads: tuple[float, ...] = ()
    """The loads to run, increasing; empty with `auto`."""
    auto: bool = False
    """Pick the loads: rate, as guidellm's sweep; concurrency, a bisection on the SLO."""
    auto_steps: int = AUTO_RATE_STEPS
    requests: int | None = None
    duration_s: float | None = None
    seed: int | None = None
    stop_at_errors: float | None = None
    """Stop a target's series after a step whose error rate exceeds this (0..1)."""
    stop_at_attainment: float | None = None
    """Stop a target's series after a step whose SLO attainment falls below this (0..1)."""
    preflight: bool = True
    slo: Slo | None = None
    """The SLO the steps are judged by (set on the scenario each step runs, so it is recorded
    with the run); None: the scenario's own."""


@dataclass(frozen=True)
class StepOutcome:
    """What a finished step says to the series (from its result row)."""

    axis: Axis
    load: float
    throughput_rps: float | None
    error_rate: float | None
    attainment: float | None
    met_slo: bool | None
    """None when the run has no SLO to meet."""
    status: str


class Series(Protocol):
    def next_load(self, done: Sequence[StepOutcome]) -> tuple[Axis, float] | None: ...


def _stopped(step: StepOutcome, options: SweepOptions) -> bool:
    """The early stop: a step past the error or attainment threshold ends its series."""
    if step.status not in ("completed", "timed_out"):
        return True
    if options.stop_at_errors is not None and (step.error_rate or 0.0) > options.stop_at_errors:
        return True
    return (
        options.stop_at_attainment is not None
        and step.attainment is not None
        and step.attainment < options.stop_at_attainment
    )


@dataclass
class ListSeries:
    """The given loads in order, until one passes a stop threshold."""

    axis: Axis
    loads: tuple[float, ...]
    options: SweepOptions

    def next_load(self, done: Sequence[StepOutcome]) -> tuple[Axis, float] | None:
        if done and _stopped(done[-1], self.options):
            return None
        return (self.axis, self.loads[len(done)]) if len(done) < len(self.loads) else None


@dataclass
class SweepRateSeries:
    """guidellm's sweep: a synchronous pass (concurrency 1) and a max-throughput pass (the
    scenario's concurrency) measure the rates the target does one at a time and at most; then
    `steps` constant rates spread evenly above the first up to the second (the last is the
    measured saturation rate). The passes are steps on the concurrency axis; the answer is
    over the rate steps."""

    max_concurrency: int
    steps: int
    options: SweepOptions
    rates: list[float] = field(default_factory=list)

    def next_load(self, done: Sequence[StepOutcome]) -> tuple[Axis, float] | None:
        passes = 2 if self.max_concurrency > 1 else 1
        if len(done) < passes:
            return ("concurrency", float(self.max_concurrency) if done else 1.0)
        if len(done) == passes:
            self.rates = self._spread(done)
        elif _stopped(done[-1], self.options):
            return None
        index = len(done) - passes
        return ("rate", self.rates[index]) if index < len(self.rates) else None

    def _spread(self, passes: Sequence[StepOutcome]) -> list[float]:
        """The rate steps from the passes' throughputs (none if a pass measured nothing)."""
        if any(p.status not in ("completed", "timed_out") or not p.throughput_rps for p in passes):
            return []
        low = passes[0].throughput_rps or 0.0
        high = max(low, *(p.throughput_rps or 0.0 for p in passes))
        if high <= low:
            return [low]
        return [low + (high - low) * (i + 1) / self.steps for i in range(self.steps)]


@dataclass
class BisectSeries:
    """The highest concurrency that meets the SLO: doubling from 1 until a step misses it (or
    the cap is reached), then bisecting between the last load that met it and the first that
    did not, down to neighbouring integers. Each load runs once."""

    cap: int
    options: SweepOptions

    def next_load(self, done: Sequence[StepOutcome]) -> tuple[Axis, float] | None:
        if not done:
            return ("concurrency", 1.0)
        last = done[-1]
        if last.status not in ("completed", "timed_out"):
            return None
        good = [int(s.load) for s in done if s.met_slo]
        bad = [int(s.load) for s in done if not s.met_slo]
        if not good:
            return None  # even one at a time misses the SLO
        low = max(good)
        high = min((b for b in bad if b > low), default=None)
        if high is None:
            if low >= self.cap:
                return None
            return ("concurrency", float(min(self.cap, low * 2)))
        if high - low <= 1:
            return None
        return ("concurrency", float((low + high) // 2))


def client_cores(target: TargetConfig) -> int:
    """Cores the client can use against `target`: the in-process mock shares one process."""
    return 1 if target.provider == "mock" else max(1, os.cpu_count() or 1)


def _check_loads(
    options: SweepOptions, scenario: BenchmarkScenario, targets: Sequence[TargetConfig]
) -> None:
    flag = f"--{options.axis}"
    loads = options.loads
    if not loads:
        raise ConfigError(f"command line: {flag}: the sweep's list of loads is empty")
    if len(loads) > MAX_STEPS:
        raise ConfigError(f"command line: {flag}: {len(loads)} loads; at most {MAX_STEPS}")
    for value in loads:
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"command line: {flag}: {value:g} is not a positive number")
    for before, after in zip(loads, loads[1:], strict=False):
        if after <= before:
            raise ConfigError(
                f"command line: {flag}: the loads must increase, but {after:g} follows {before:g}"
            )
    if options.axis == "concurrency":
        for value in loads:
            if value != int(value) or not 1 <= value <= MAX_CONCURRENCY:
                raise ConfigError(
                    f"command line: {flag}: {value:g} is not a whole number in 1..{MAX_CONCURRENCY}"
                )
        _check_concurrency(int(loads[-1]), scenario, targets, flag)
    else:
        _check_rate(loads[-1], scenario, targets, flag)
    for value in loads:  # every step's overrides, before the first one runs
        override_scenario(scenario, step_options(options, options.axis, value))


def step_options(options: SweepOptions, axis: Axis, load: float) -> ExecuteOptions:
    """The execute overrides of one step at `load` (the scenario and target are chosen apart)."""
    return ExecuteOptions(
        requests=options.requests,
        concurrency=int(load) if axis == "concurrency" else None,
        rate=load if axis == "rate" else None,
        duration_s=options.duration_s,
        seed=options.seed,
        slo=options.slo,
    )


def _check_concurrency(
    concurrency: int, scenario: BenchmarkScenario, targets: Sequence[TargetConfig], flag: str
) -> None:
    """Refuse a concurrency whose expected client CPU (capacity.py's model) exceeds the cores
    the client can use: its timings would be the client's own queue."""
    need = expected_cpu(concurrency, scenario.max_tokens, scenario.streaming_required)
    for target in targets:
        cores = client_cores(target)
        if need > cores:
            raise ConfigError(
                f"command line: {flag}: {concurrency} in flight is beyond what this client can "
                f"drive against {target.name}: it expects {need:.1f} cores of CPU (at "
                f"{ASSUMED_CHUNK_RATE:g} chunks/s a stream and its measured cost per request "
                f"and chunk, stages/execute/record/capacity.py) and can use {cores}"
            )


def _check_rate(
    rate: float, scenario: BenchmarkScenario, targets: Sequence[TargetConfig], flag: str
) -> None:
    """Refuse a rate the client cannot drive on this machine (its timings would be its own)."""
    for target in targets:
        cores = client_cores(target)
        most = client_capacity_rps(scenario.max_tokens, scenario.streaming_required, cores)
        if rate > most:
            where = "in-process mock: one process" if target.provider == "mock" else "cores"
            raise ConfigError(
                f"command line: {flag}: {rate:g} requests/s is beyond what this client can "
                f"drive against {target.name}: at most {most:.0f} requests/s on {cores} "
                f"{'core' if cores == 1 else 'cores'} ({where}) at its measured cost of "
                f"{1e6 * cores / most:.0f} µs of CPU per request of {scenario.max_tokens} "
                "tokens (stages/execute/record/capacity.py, docs/accuracy.md)"
            )


def check_sweep(
    config: LoadedConfig, options: SweepOptions, has_slo: bool
) -> tuple[BenchmarkScenario, list[TargetConfig]]:
    """The scenario and targets of a sweep, once everything about it is known to be runnable."""
    scenario = config.select_scenarios([options.scenario])[0]  # unknown: exit 2, named
    targets = config.select_targets(options.targets)
    if not targets:
        raise ConfigError("command line: --target: the config has no targets")
    for name, value in (
        ("--stop-at-errors", options.stop_at_errors),
        ("--stop-at-attainment", options.stop_at_attainment),
    ):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"command line: {name}: {value:g} is not in 0..1")
    if options.stop_at_attainment is not None and not has_slo:
        raise ConfigError(
            "command line: --stop-at-attainment: needs an SLO (--slo, or the scenario's slo)"
        )
    if scenario.rate is not None and (options.axis == "concurrency" or options.auto):
        what = (
            "--auto rate's passes" if options.auto and options.axis == "rate" else "--concurrency"
        )
        raise ConfigError(
            f"command line: {'--auto' if options.auto else '--concurrency'}: {what} run a closed "
            f"loop, but scenario {scenario.name!r} sets rate = {scenario.rate:g} (an open loop); "
            "sweep it with --rate, or use a scenario without a rate"
        )
    if options.auto:
        if options.loads:
            raise ConfigError(f"command line: --auto: give either --auto or --{options.axis}")
        if options.axis == "concurrency" and not has_slo:
            raise ConfigError(
                "command line: --auto concurrency: bisects on the SLO, so it needs one "
                "(--slo, or the scenario's slo)"
            )
        if not 1 <= options.auto_steps <= MAX_STEPS:
            raise ConfigError(f"command line: --steps: {options.auto_steps} not in 1..{MAX_STEPS}")
    else:
        _check_loads(options, scenario, targets)
    return scenario, targets


def make_series(options: SweepOptions, scenario: BenchmarkScenario) -> Series:
    """A fresh series for one target."""
    if not options.auto:
        return ListSeries(options.axis, options.loads, options)
    if options.axis == "rate":
        return SweepRateSeries(scenario.concurrency_level, options.auto_steps, options)
    return BisectSeries(MAX_CONCURRENCY, options)
