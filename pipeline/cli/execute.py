"""`pipeline execute`: run scenarios against targets and append one event per request attempt.

Thin by design: it turns options into `ExecuteOptions`, hands `stages.execute.session.execute`
a progress factory (a bar only on a terminal and without -q), and prints the summary and why
requests failed. Failed requests are data, so the exit code is 0 even when some failed, and 4
only when a target answered nothing right; 2 for bad input; 130 when interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.context import DURATION, SEED, Context, json_option, pass_ctx
from pipeline.cli.ui import ProgressReporter, echo_json, print_table, progress

if TYPE_CHECKING:
    from pipeline.config import LoadedConfig
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
    as_json: bool,
) -> int:
    """Run scenarios against targets; append one event per request attempt.

        Every selected scenario runs against every selected target, one after the other, under one
        run id. Failed requests are events, and the end of the run says why they failed (-v: every
        distinct message). Exit 0 when every target answered some requests right, 4 when every
        measured attempt against some target failed, 1 when the pre-flight request (one per target,
    not an event) finds a target that cannot answer at all, 2 for bad input, 130 when interrupted
        (SIGINT/SIGTERM: in-flight requests are recorded as cancelled).
    """
    from stages.execute.load.plan import ExecuteOptions
    from stages.execute.session import execute as run_execute

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
    )
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
    if as_json:
        echo_json(result.as_dict())
    elif not ctx.quiet:
        rows = [_row(p.as_dict()) for p in result.pairs]
        # Workers only when some pair used more than one: the column is noise otherwise.
        columns = _COLUMNS + (["workers"] if any(p.workers > 1 for p in result.pairs) else [])
        print_table(f"run {result.run_id} ({result.status}; times in ms)", rows, columns)
        ctx.info(
            f"events in {ctx.store.where('events')} (run_id {result.run_id}, seed {result.seed})"
        )
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
