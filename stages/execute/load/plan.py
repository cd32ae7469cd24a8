"""What a run will send, decided before anything is sent: the options, each pair checked and
planned (`prepare`), and its schedule (`plan_load`).

Everything that can be checked before a request goes out is checked here (scenario overrides,
capabilities, API keys and secret headers), so a bad input exits 2 with nothing sent. The
schedule is a pure function of (scenario, seed), so `--seed` reproduces arrivals and the choice
of prompts exactly; the runner only plays it. With worker processes the same schedule is played
by all of them: a closed loop draws indexes from one shared counter, an open loop deals its
arrivals out by weight (`schedule_share`), and the concurrency is split so the workers' slots
sum to it exactly (`split_concurrency`).

Runners that share one run (`--shard i/N`) expand the same seeded plan and each plays its
share (`LoadPlan.shard`): the request indexes ≡ i (mod N), warmup included, so every event id
stays the one an unsharded run would give it; an open loop keeps those arrivals' due times (an
R/N arrival process per shard), and the concurrency is split as `split_concurrency` splits it
over worker processes.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from pipeline.config import LoadedConfig, format_validation_error
from pipeline.errors import ConfigError
from schemas import (
    MAX_DURATION,
    BenchmarkScenario,
    Slo,
    TargetConfig,
    get_provider,
    parse_duration,
)
from stages.execute.client.providers import ProviderSettings, api_key_env
from stages.execute.record.capacity import default_workers

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "ExecuteOptions",
    "LoadPlan",
    "PreparedRun",
    "Shard",
    "arrival_offsets",
    "new_run_id",
    "parse_shard",
    "parse_start_at",
    "override_scenario",
    "plan_load",
    "shard_seed",
    "prepare",
    "schedule_share",
    "split_concurrency",
]

DEFAULT_REQUEST_TIMEOUT_S = 60.0
"""Per-request timeout when a target sets none (capped by the scenario's timeout_duration)."""


@dataclass(frozen=True)
class Shard:
    """One runner's part of a shared run: `index` of `count` (0-based, `--shard index/count`)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"{self.index}/{self.count} is not a shard: give i/N with N >= 1 and 0 <= i < N"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def writer(self, worker: int) -> str:
        """The event writer's name: `s1of3_w0`, so no two runners' files share a name."""
        return f"s{self.index}of{self.count}_w{worker}"


MAX_SHARDS = 10_000
"""More runners than this is a typo, not a fleet (and every one would need a slot)."""


def parse_shard(text: str) -> Shard:
    """`i/N` → Shard; raise ValueError saying what is wrong (the CLI names the flag)."""
    head, sep, tail = text.strip().partition("/")
    if not sep or not head.isdigit() or not tail.isdigit():
        raise ValueError(f"{text!r} is not i/N (e.g. 0/3: the first of three runners)")
    index, count = int(head), int(tail)
    if count > MAX_SHARDS:
        raise ValueError(f"{text!r}: at most {MAX_SHARDS} shards")
    return Shard(index, count)


def parse_start_at(text: str, now: datetime | None = None) -> datetime:
    """`--start-at`: an ISO 8601 instant (no zone: UTC) or `+DURATION` from `now`, as a UTC
    datetime at most 7 days ahead or ago; raise ValueError saying what is wrong (the CLI names the
    flag). A launcher turns `+30s` into one instant, so every shard waits for the same one."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    text = text.strip()
    if text.startswith("+"):
        delay = parse_duration(text[1:])
        if delay > MAX_DURATION:  # before adding it: a date past 9999 cannot be held
            raise ValueError(f"{text!r} is more than {MAX_DURATION.days} days ahead")
        instant = now + delay
    else:
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither an ISO time (2026-12-03T14:00:00Z) nor +DURATION (+30s)"
            ) from None
        try:
            instant = (
                instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
            )
        except OverflowError:  # a zone that moves year 1 or 9999 out of range
            raise ValueError(f"{text!r} is out of range") from None
    if instant - now > MAX_DURATION:
        raise ValueError(f"{text!r} is more than {MAX_DURATION.days} days ahead")
    if now - instant > MAX_DURATION:  # a typo, not a start shared with other runners
        raise ValueError(f"{text!r} is more than {MAX_DURATION.days} days ago")
    return instant


def shard_seed(run_id: str) -> int:
    """The seed every shard of `run_id` derives when none is given: the same plan everywhere
    (a random seed per runner would give each its own plan, and the shares would not fit)."""
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=4).digest()) % 2**31


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
    shard: Shard | None = None
    """This runner's share of a run others play too (`--shard i/N`); None: the whole run."""
    run_id: str | None = None
    """The run to write into (`--run-id`); a sharded run needs it, so every shard names one."""
    start_at: datetime | None = None
    """Wait for this instant (UTC) before the first pair (`--start-at`)."""
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


def _workers(
    scenario: BenchmarkScenario, target: TargetConfig, requested: int | None, slots: int
) -> int:
    """The explicit count, else the capacity rule; never more than the (shard's) concurrency.

    The in-process `mock` provider always runs in one process: it has no network client to
    spread, and its `concurrency_limit` is one process's state.
    """
    if target.provider == "mock":
        return 1
    if requested is None:
        requested = default_workers(
            slots,
            scenario.max_tokens,
            scenario.streaming_required,
            scenario.rate,
            os.cpu_count(),
        )
    return max(1, min(requested, slots))


def prepare(
    config: LoadedConfig, options: ExecuteOptions, environ: Mapping[str, str] | None = None
) -> tuple[list[PreparedRun], int]:
    """Check and plan every pair before anything is sent; raise ConfigError (exit 2) if unfit."""
    env = os.environ if environ is None else environ
    scenarios = [override_scenario(s, options) for s in config.select_scenarios(options.scenarios)]
    targets = config.select_targets(options.targets)
    if options.seed is not None:
        seed = options.seed
    elif options.shard is not None and options.run_id is not None:
        seed = shard_seed(options.run_id)
    else:
        seed = secrets.randbelow(2**31)
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
            plan = plan_load(scenario, len(prompts), seed, options.shard)
            runs.append(
                PreparedRun(
                    scenario=scenario,
                    target=target,
                    prompts=prompts,
                    config_hash=config.config_hash(scenario, target),
                    plan=plan,
                    request_timeout_s=_request_timeout(scenario, target),
                    api_key=keys[target.name],
                    workers=_workers(scenario, target, options.workers, plan.slots),
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
    shard: Shard | None = None
    """The share this runner plays; None: all of it."""

    @property
    def total(self) -> int:
        """Request indexes in the whole run (every shard's), warmup first."""
        return self.warmup + self.requests

    @property
    def slots(self) -> int:
        """This runner's share of the concurrency (all of it when unsharded)."""
        if self.shard is None:
            return self.concurrency
        return split_concurrency(self.concurrency, self.shard.count)[self.shard.index]

    @property
    def indexes(self) -> range:
        """The request indexes this runner sends, in order, warmup first."""
        if self.shard is None:
            return range(self.total)
        return range(self.shard.index, self.total, self.shard.count)

    @property
    def own_warmup(self) -> int:
        """How many of `indexes` are warmup requests."""
        # The indexes are ascending and warmup ones come first: those below `warmup`.
        return len(range(self.indexes.start, min(self.warmup, self.total), self.indexes.step))

    @property
    def own_requests(self) -> int:
        """Measured requests this runner sends."""
        return len(self.indexes) - self.own_warmup

    def schedule(self) -> Iterator[tuple[int, float]]:
        """This runner's (request_index, due offset) pairs of the open loop: the plan's own due
        times, so the shards' union is exactly the unsharded schedule. Lazy: a plan may hold
        10 million arrivals, and a list of pairs of them would cost a gigabyte."""
        shard = self.shard
        pairs = enumerate(self.arrivals_s, start=self.warmup)
        if shard is None:
            return pairs
        return ((index, offset) for index, offset in pairs if index % shard.count == shard.index)


def plan_load(
    scenario: BenchmarkScenario, prompts: int, seed: int, shard: Shard | None = None
) -> LoadPlan:
    """The schedule of one scenario: deterministic given the seed (`shard` picks a share)."""
    if shard is not None and scenario.concurrency_level < shard.count:
        raise ConfigError(
            f"--shard {shard}: scenario {scenario.name!r} has concurrency_level "
            f"{scenario.concurrency_level}, fewer slots than the {shard.count} shards (each "
            "shard needs at least one); raise it (--concurrency) or use fewer shards"
        )
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
        shard=shard,
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
    for index, offset in plan.schedule():
        for w, weight in enumerate(slots):
            credit[w] += weight
        chosen = max(range(len(slots)), key=credit.__getitem__)
        credit[chosen] -= total
        if chosen == worker:
            mine.append((index, offset))
    return mine
