"""`pipeline sweep`: one scenario over increasing loads, per target; the load it takes.

Thin by design: it turns options into `SweepOptions`, hands `stages.sweep.runner.run_sweep` a
progress factory and a line printer for each finished step, and prints the answer (the rows of
results/sweeps.parquet that the last aggregate wrote for this sweep).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import click

from pipeline.cli.context import DURATION, SEED, Context, json_option, pass_ctx
from pipeline.cli.slo import slo_option, slo_policy
from pipeline.cli.ui import ProgressReporter, echo_json, print_table, progress
from schemas import Slo
from stages.aggregate.slo import attainment_text

__all__ = ["COMMANDS"]

_ANSWER_COLUMNS = ["target", "axis", "steps", "max under SLO", "goodput", "knee", "peak req/s"]


class _LoadList(click.ParamType):  # type: ignore[type-arg]
    """`1,2,4,8`: the loads of a sweep, as numbers (the order is checked with the scenario)."""

    name = "list"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if not text:
            self.fail("the list of loads is empty", param, ctx)
        loads = []
        for part in text.split(","):
            try:
                number = float(part.strip())
            except ValueError:
                self.fail(f"{part.strip()!r} is not a number (e.g. 1,2,4,8)", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{part.strip()!r} is not a finite number", param, ctx)
            loads.append(number)
        return tuple(loads)


def _unit(axis: str) -> str:
    return "in flight" if axis == "concurrency" else "req/s"


def _fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.4g}{suffix}"


def _step_line(step: Any) -> str:
    row = step.row
    parts = [
        f"step {step.step} {step.target} {step.axis} {step.load:g}: {step.status}",
        f"{_fmt(row.get('throughput_rps'))} req/s",
        f"p50 {_fmt(row.get('latency_p50_ms'))} ms",
        f"p99 {_fmt(row.get('latency_p99_ms'))} ms",
        f"errors {_fmt(100 * row['error_rate'] if row.get('error_rate') is not None else None)}%",
    ]
    if row.get("slo_attainment") is not None:
        verdict = {True: "met", False: "missed", None: ""}[step.met_slo]
        parts.append(f"SLO {attainment_text(row['slo_attainment'])} {verdict}".rstrip())
    return ", ".join(parts)


def _answer_row(answer: dict[str, Any]) -> dict[str, Any]:
    unit = _unit(answer["axis"])
    best = answer["max_load_under_slo"]
    return {
        **answer,
        "max under SLO": (
            "no SLO"
            if answer["slo"] is None
            else "none met"
            if best is None
            else f"{best:g} {unit}"
        ),
        "goodput": _fmt(answer["goodput_at_max_rps"], " req/s"),
        "knee": "not reached" if answer["knee_load"] is None else f"{answer['knee_load']:g} {unit}",
        "peak req/s": _fmt(answer["peak_throughput_rps"]),
    }


@click.command()
@click.argument("scenario")
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Target to sweep (repeatable; each gets its own series). Default: every target.",
)
@click.option(
    "--concurrency",
    "concurrency",
    type=_LoadList(),
    default=None,
    help="Closed-loop concurrencies to run, increasing (e.g. 1,2,4,8).",
)
@click.option(
    "--rate",
    "rate",
    type=_LoadList(),
    default=None,
    help="Open-loop rates (requests/s) to run, increasing (e.g. 1,2,5,10).",
)
@click.option(
    "--auto",
    type=click.Choice(["rate", "concurrency"]),
    default=None,
    help="Pick the loads: 'rate' as guidellm's sweep (a synchronous and a max-throughput pass, "
    "then --steps rates spread up to the saturation rate); 'concurrency' bisects on the "
    "highest concurrency that meets the SLO (needs one).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1, max=1000),
    default=5,
    show_default=True,
    help="With --auto rate: how many rates to spread.",
)
@click.option(
    "--requests", type=click.IntRange(min=1), default=None, help="Measured requests per step."
)
@click.option("--duration", type=DURATION, default=None, help="Length of each step (e.g. 30s).")
@click.option("--seed", type=SEED, default=None, help="Seed for every step (default: random).")
@click.option(
    "--stop-at-errors",
    type=click.FloatRange(0, 1),
    default=None,
    help="End a target's series after a step whose error rate is above this (0..1).",
)
@click.option(
    "--stop-at-attainment",
    type=click.FloatRange(0, 1),
    default=None,
    help="End a target's series after a step whose SLO attainment is below this (0..1).",
)
@partial(
    slo_option,
    help_text="Judge every step by this SLO instead of the scenario's `slo`, e.g. "
    '"ttft=500ms,tpot=50ms,latency=10s,attainment=0.95" (any of the thresholds; attainment '
    "defaults to 0.95); as aggregate's --slo, and recorded with each step's scenario.",
)
@click.option(
    "--no-preflight", is_flag=True, help="Skip the pre-flight request before each target's series."
)
@json_option
@pass_ctx
def sweep(
    ctx: Context,
    scenario: str,
    targets: tuple[str, ...],
    concurrency: tuple[float, ...] | None,
    rate: tuple[float, ...] | None,
    auto: str | None,
    steps: int,
    requests: int | None,
    duration: float | None,
    seed: int | None,
    stop_at_errors: float | None,
    stop_at_attainment: float | None,
    slo: Slo | None,
    no_preflight: bool,
    as_json: bool,
) -> int:
    """Run SCENARIO at increasing loads against each target; find the load it takes.

    Each step is an ordinary run (events, results) tagged with the sweep's id and step, and is
    aggregated as soon as it ends. The answer, per target: the highest load that met the SLO,
    the goodput there, and the knee of the throughput-latency curve (README, "Sweeps"), also in
    results/sweeps.parquet. Give exactly one of --concurrency, --rate or --auto. Exit 0, 4 when
    every attempt against some target failed, 2 for bad input, 130 when interrupted (finished
    steps stay recorded).
    """
    from stages.sweep.plan import Axis, SweepOptions
    from stages.sweep.runner import run_sweep

    given = [name for name, v in (("--concurrency", concurrency), ("--rate", rate)) if v]
    if auto:
        given.append("--auto")
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one of --concurrency LIST, --rate LIST or --auto rate|concurrency"
            + (f" (got {', '.join(given)})" if given else "")
        )
    axis: Axis = "rate" if rate or auto == "rate" else "concurrency"
    options = SweepOptions(
        scenario=scenario,
        targets=targets,
        axis=axis,
        loads=tuple(concurrency or rate or ()),
        auto=auto is not None,
        auto_steps=steps,
        requests=requests,
        duration_s=duration,
        seed=seed,
        stop_at_errors=stop_at_errors,
        stop_at_attainment=stop_at_attainment,
        preflight=not no_preflight,
        slo=slo,
    )
    enabled = ctx.show_progress and not as_json

    @contextmanager
    def bar(description: str, total: int | None) -> Iterator[ProgressReporter]:
        with progress(description, total, enabled, status="") as reporter:
            yield reporter

    def said(step: Any) -> None:
        if not as_json:
            ctx.info(_step_line(step))

    result = run_sweep(
        ctx.config,
        ctx.data_dir,
        options,
        ctx.config.price,
        progress=bar,
        on_step=said,
        lock=ctx.lock("sweep"),
        slo_policy=slo_policy(ctx, slo),
    )
    answers = result.answers.to_dicts() if result.answers.height else []
    if as_json:
        echo_json(
            {
                "sweep_id": result.sweep_id,
                "status": result.status,
                "seed": result.seed,
                "steps": [s.as_dict() for s in result.steps],
                "answers": answers,
                "sweeps": str(result.sweeps_path),
                "failed_targets": result.failed_targets,
                "exit_code": result.exit_code,
            }
        )
    elif not ctx.quiet:
        print_table(
            f"sweep {result.sweep_id} ({result.status})",
            [_answer_row(a) for a in answers],
            _ANSWER_COLUMNS,
        )
        ctx.info(f"answer in {result.sweeps_path} (sweep_id {result.sweep_id}, seed {result.seed})")
    for name in result.failed_targets:
        click.echo(f"error: every measured attempt against {name} failed (exit 4)", err=True)
    if result.status == "interrupted":
        ctx.info("interrupted: the finished steps are recorded; the last one as interrupted")
    return result.exit_code


COMMANDS = [sweep]
