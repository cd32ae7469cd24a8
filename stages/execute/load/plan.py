"""What a run will send, decided before anything is sent: the options, each pair checked and
planned (`prepare`), and its schedule (`plan_load`).

Everything that can be checked before a request goes out is checked here (scenario overrides,
capabilities, API keys and secret headers), so a bad input exits 2 with nothing sent. The
schedule is a pure function of (scenario, seed), so `--seed` reproduces arrivals and the choice
of prompts exactly; the runner only plays it. With worker processes the same schedule is played
by all of them: a closed loop draws indexes from one shared counter, an open loop deals its
arrivals out by weight (`schedule_share`), and the concurrency is split so the workers' slots
sum to it exactly (`split_concurrency`).
"""

from __future__ import annotations

import math
import os
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from pipeline.config import LoadedConfig, format_validation_error
from pipeline.errors import ConfigError
from schemas import BenchmarkScenario, Slo, TargetConfig, get_provider
from stages.execute.client.providers import ProviderSettings, api_key_env
from stages.execute.record.capacity import default_workers

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "ExecuteOptions",
    "LoadPlan",
    "PreparedRun",
    "arrival_offsets",
    "new_run_id",
    "override_scenario",
    "plan_load",
    "prepare",
    "schedule_share",
    "split_concurrency",
]

DEFAULT_REQUEST_TIMEOUT_S = 60.0
"""Per-request timeout when a target sets none (capped by the scenario's timeout_duration)."""


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
    """Worker processes per pair; None: `stages.execute.record.capacity.default_workers`."""
    preflight: bool = True
    """One request per target first; stop when one cannot answer (`stages.execute.preflight`)."""
    slo: Slo | None = None
    """Replaces the scenario's SLO (recorded with the run's scenario, so aggregate judges by it)."""


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

    def settings(self, concurrency: int) -> ProviderSettings:
        """What the target's client is built from, for a share of the concurrency."""
        return ProviderSettings(
            self.target,
            self.api_key,
            concurrency,
            self.request_timeout_s,
            secret_headers=self.secret_headers,
            run_seed=self.plan.seed,
        )


def new_run_id(now: datetime | None = None) -> str:
    """`20261127T031500Z-1a2b3c`: sortable by start time, unique by its random suffix."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def override_scenario(scenario: BenchmarkScenario, options: ExecuteOptions) -> BenchmarkScenario:
    """`scenario` with the command line's overrides, validated (ConfigError naming the field)."""
    updates: dict[str, Any] = {}
    if options.requests is not None:
        updates["expected_operations"] = options.requests
    if options.concurrency is not None:
        updates["concurrency_level"] = options.concurrency
    if options.rate is not None:
        updates["rate"] = options.rate
    if options.duration_s is not None:
        updates["duration"] = options.duration_s
    if options.slo is not None:
        updates["slo"] = options.slo
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
    scenarios = [override_scenario(s, options) for s in config.select_scenarios(options.scenarios)]
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
