"""`pipeline execute`: run scenarios against targets and append one event per request attempt.

Thin by design: it turns options into `ExecuteOptions`, hands `stages.execute.session.execute`
a progress factory (a bar only on a terminal and without -q), and prints the summary. Failed
requests are data, so the exit code is 0 even when some failed; 2 for bad input; 130 when
interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from pipeline.cli.context import SEED, Context, json_option, pass_ctx
from pipeline.cli.ui import ProgressReporter, echo_json, print_table, progress
from schemas import parse_duration

__all__ = ["COMMANDS"]

_COLUMNS = [
    "scenario",
    "target",
    "status",
    "requests",
    "ok",
    "errors",
    "p50 ms",
    "ttft p50 ms",
    "req/s",
    "workers",
]


def _row(pair: dict[str, Any]) -> dict[str, Any]:
    return {
        **pair,
        "p50 ms": pair["latency_p50_ms"],
        "ttft p50 ms": pair["ttft_p50_ms"],
        "req/s": pair["throughput_rps"],
    }


class _DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail("must be a positive duration", param, ctx)
        return seconds


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
    type=_DurationType(),
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
    as_json: bool,
) -> int:
    """Run scenarios against targets; append one event per request attempt.

    Every selected scenario runs against every selected target, one after the other, under one
    run id. Exit 0 even when requests failed (failures are events), 2 for bad input, 130 when
    interrupted (SIGINT/SIGTERM: in-flight requests are recorded as cancelled).
    """
    from stages.execute.load.plan import ExecuteOptions
    from stages.execute.record.capacity import LAGGING_MS
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
    )
    enabled = ctx.show_progress and not as_json

    @contextmanager
    def bar(description: str, total: int | None) -> Iterator[ProgressReporter]:
        with progress(description, total, enabled, status="") as reporter:
            yield reporter

    result = run_execute(ctx.config, ctx.data_dir, options, progress=bar)
    if as_json:
        echo_json(result.as_dict())
    else:
        rows = [_row(p.as_dict()) for p in result.pairs]
        print_table(f"run {result.run_id} ({result.status})", rows, _COLUMNS)
        ctx.info(f"events in {ctx.data_dir}/events (run_id {result.run_id}, seed {result.seed})")
    for pair in result.pairs:
        if pair.client_saturated:
            share = pair.client_cpu_saturation or 0.0
            click.echo(
                f"warning: {pair.scenario} × {pair.target}: the client was CPU-saturated for "
                f"{share:.0%} of the run, so its timings include its own queueing; rerun with "
                "more --workers or lower concurrency (client_saturated in the runs events)",
                err=True,
            )
        starved = lag_warning(pair.as_dict(), LAGGING_MS)
        if starved:
            click.echo(starved, err=True)
    if result.status == "interrupted":
        ctx.info("interrupted: the run is recorded as interrupted")
    return result.exit_code


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
