"""`pipeline execute`: run scenarios against targets and append one event per request attempt.

Thin by design: it turns options into `ExecuteOptions`, hands `stages.execute.session.execute`
a progress factory (a bar only on a terminal and without -q), and prints the summary and why
requests failed. Failed requests are data, so the exit code is 0 even when some failed, and 4
only when a target answered nothing right; 2 for bad input; 130 when interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.context import DURATION, SEED, Context, json_option, pass_ctx
from pipeline.cli.ui import ProgressReporter, echo_json, print_table, progress
from schemas import check_safe_name

if TYPE_CHECKING:
    from pipeline.config import LoadedConfig
    from stages.execute.load.plan import Shard
    from stages.execute.record.summary import PairResult

__all__ = ["COMMANDS"]

_COLUMNS = ["scenario", "target", "status", "attempts", "ok", "errors", "p50", "ttft p50", "req/s"]
"""Times in ms (the title says so): short headers keep the table inside 80 columns."""


def _row(pair: dict[str, Any]) -> dict[str, Any]:
    return {
        **pair,
        "attempts": pair["requests"],
        "p50": pair["latency_p50_ms"],
        "ttft p50": pair["ttft_p50_ms"],
        "req/s": pair["throughput_rps"],
    }


class _ShardType(click.ParamType):  # type: ignore[type-arg]
    name = "i/N"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Shard:
        from stages.execute.load.plan import Shard, parse_shard

        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _StartAtType(click.ParamType):  # type: ignore[type-arg]
    name = "time"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        from stages.execute.load.plan import parse_start_at

        if isinstance(value, datetime):
            return value
        try:
            return parse_start_at(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _run_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            check_safe_name(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


@click.command()
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help="Scenario to run (repeatable). Default: the config's default_scenarios.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Target to run against (repeatable). Default: every target.",
)
@click.option(
    "--requests", type=click.IntRange(min=1), default=None, help="Override expected_operations."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=100),
    default=None,
    help="Override concurrency_level (the open loop's in-flight cap).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Open loop at R requests/s (arrival as the scenario says).",
)
@click.option(
    "--duration",
    type=DURATION,
    default=None,
    help="Stop scheduling after this long (e.g. 30s, 5m).",
)
@click.option(
    "--seed",
    type=SEED,
    default=None,
    help="Seed for prompt choice and arrivals (default: random, recorded).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Worker processes per pair (default: from the CPU count and the expected "
    "chunk rate; 1 for a small run). See docs/accuracy.md.",
)
@click.option(
    "--no-preflight",
    is_flag=True,
    help="Skip the one request per target that runs first and stops the run (exit 1) when a "
    "target cannot answer at all (nothing listening, a refused request).",
)
@click.option(
    "--run-id",
    default=None,
    callback=_run_id,
    metavar="RUN_ID",
    help="Write into this run ([A-Za-z0-9._-]; every shard of a shared run names the same one). "
    "Default: a new id, the UTC start and random hex.",
)
@click.option(
    "--shard",
    type=_ShardType(),
    default=None,
    help="Play share I of N of the run --run-id names (0 <= I < N): the request indexes ≡ I "
    "mod N of the same seeded plan (with no --seed, the seed is derived from the run id), and "
    "an even share of the concurrency. The run is completed once all N shards have finished.",
)
@click.option(
    "--start-at",
    type=_StartAtType(),
    default=None,
    help="Wait until this instant before the first pair, so shards begin together: an ISO "
    "time (no zone: UTC) or +DURATION from now (e.g. +30s).",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1, max=10_000),
    default=None,
    help="Launch N runners of one run as local processes, each `execute --shard i/N` (or Ray "
    "tasks, with --ray); their exit codes combined, Ctrl-C stops them all. Default --start-at: "
    "+5s (Ray: +30s).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="With --shards: one Ray task per shard (needs the optional ray extra); ADDRESS is "
    "an existing cluster's, none starts a local one. The data directory must be one every "
    "node reaches.",
)
@json_option
@pass_ctx
def execute(
    ctx: Context,
    scenarios: tuple[str, ...],
    targets: tuple[str, ...],
    requests: int | None,
    concurrency: int | None,
    rate: float | None,
    duration: float | None,
    seed: int | None,
    workers: int | None,
    no_preflight: bool,
    run_id: str | None,
    shard: Shard | None,
    start_at: datetime | None,
    shards: int | None,
    ray_address: str | None,
    as_json: bool,
) -> int:
    """Run scenarios against targets; append one event per request attempt.

    Every selected scenario runs against every selected target, one after the other, under one
    run id. Failed requests are events, and the end of the run says why they failed (-v: every
    distinct message). Exit 0 when every target answered some requests right, 4 when every
    measured attempt against some target failed, 1 when the pre-flight request (one per target,
    not an event) finds a target that cannot answer at all, 2 for bad input, 130 when interrupted
    (SIGINT/SIGTERM: in-flight requests are recorded as cancelled).

    Runners can share one run: --shard I/N (with --run-id) on each, or --shards N to launch
    them here (docs/shards.md).
    """
    from stages.execute.load.plan import ExecuteOptions
    from stages.execute.session import execute as run_execute

    if shard is not None and shards is not None:
        raise click.UsageError(
            "--shard and --shards: give one (--shards N launches N runners, each with its "
            "own --shard i/N)"
        )
    if shard is not None and run_id is None:
        raise click.UsageError(
            f"--shard {shard} needs --run-id: every shard must write into the same run"
        )
    if ray_address is not None and shards is None:
        raise click.UsageError("--ray needs --shards N (how many Ray tasks to run)")
    options = ExecuteOptions(
        scenarios=scenarios,
        targets=targets,
        requests=requests,
        concurrency=concurrency,
        rate=rate,
        duration_s=duration,
        seed=seed,
        workers=workers,
        preflight=not no_preflight,
        shard=shard,
        run_id=run_id,
        start_at=start_at,
    )
    if shards is not None:
        from pipeline.cli.shards import launch

        return launch(ctx, options, shards, ray_address, as_json)
    enabled = ctx.show_progress and not as_json

    @contextmanager
    def bar(description: str, total: int | None) -> Iterator[ProgressReporter]:
        with progress(description, total, enabled, status="") as reporter:
            yield reporter

    config = ctx.config
    if workers is not None:
        for name in _mock_targets(config, targets):
            click.echo(
                f"warning: --workers does not apply to {name}: the in-process mock runs in one "
                "process (serve it with `pipeline mock-server` and point an openai-compatible "
                "target at it to spread the client)",
                err=True,
            )
    result = run_execute(config, ctx.store, options, progress=bar)
    for line in result.warnings:
        click.echo(line, err=True)
    shared = None
    if shard is not None:
        from pipeline.cli.shards import shared_status

        shared = shared_status(ctx.data_dir, result.run_id)
    if as_json:
        payload = result.as_dict()
        if shared is not None:
            payload["run_status"], payload["shards"], payload["missing_shards"] = shared
        echo_json(payload)
    elif not ctx.quiet:
        rows = [_row(p.as_dict()) for p in result.pairs]
        # Workers only when some pair used more than one: the column is noise otherwise.
        columns = _COLUMNS + (["workers"] if any(p.workers > 1 for p in result.pairs) else [])
        title = f"run {result.run_id} ({result.status}; times in ms)"
        if shared is not None:
            title = f"run {result.run_id}, shard {shard} ({result.status}; times in ms)"
        print_table(title, rows, columns)
        ctx.info(
            f"events in {ctx.store.where('events')} (run_id {result.run_id}, seed {result.seed})"
        )
    if shared is not None:
        from stages.aggregate.status import status_text

        ctx.info(f"run {result.run_id}: {status_text(*shared)}")
    for pair in result.pairs:
        for line in _pair_warnings(pair, config, every=ctx.verbose > 0):
            click.echo(line, err=True)
    for name in result.failed_targets:
        click.echo(
            f"error: every measured attempt against {name} failed (exit 4); its events: "
            f"pipeline events --last --target {name}",
            err=True,
        )
    if result.status == "interrupted":
        ctx.info("interrupted: the run is recorded as interrupted")
    return result.exit_code


def _mock_targets(config: LoadedConfig, selected: tuple[str, ...]) -> list[str]:
    return [
        t.name
        for t in config.config.targets
        if t.provider == "mock" and (not selected or t.name in selected)
    ]


def _pair_warnings(pair: PairResult, config: LoadedConfig, *, every: bool) -> list[str]:
    """What the end of the run says about one pair on stderr: why its requests failed (error
    types, counts, a sample or every distinct message, a hint), then the client's health."""
    from stages.execute.record.capacity import LAGGING_MS
    from stages.execute.record.diagnosis import describe_errors

    label = f"{pair.scenario} × {pair.target}"
    lines = []
    target = next((t for t in config.config.targets if t.name == pair.target), None)
    if pair.errors and target is not None:
        lines.append(f"{label}: {pair.errors} of {pair.requests} measured attempts failed:")
        lines += [f"  {line}" for line in describe_errors(pair.errors_by_type, target, every=every)]
    if pair.client_saturated:
        share = pair.client_cpu_saturation or 0.0
        remedy = (
            "lower concurrency (the in-process mock shares the client's process)"
            if pair.provider == "mock"
            else "rerun with more --workers or lower concurrency"
        )
        lines.append(
            f"warning: {label}: the client was CPU-saturated for {share:.0%} of the run, so its "
            f"timings include its own queueing; {remedy} (client_saturated in the runs events)"
        )
    starved = lag_warning(pair.as_dict(), LAGGING_MS)
    if starved:
        lines.append(starved)
    return lines


def lag_warning(pair: dict[str, Any], limit_ms: float) -> str | None:
    """The warning for a pair whose event loop ran late without the client being CPU-saturated:
    starved by other processes, or busy in bursts (a saturated pair gets that warning instead)."""
    lag = pair.get("client_loop_lag_p95_ms")
    if lag is None or lag < limit_ms or pair.get("client_saturated"):
        return None
    return (
        f"warning: {pair['scenario']} × {pair['target']}: the client's event loop ran "
        f"{lag:.0f} ms late (p95) without being CPU-saturated (other processes starving it, or "
        "bursts of work), so its timings can be up to that much late; rerun on a quieter "
        "machine or with more --workers (client_loop_lag_p95_ms in the runs events)"
    )


COMMANDS = [execute]
