"""`pipeline run`: execute, aggregate, profile and recommend in order, for cron.

It invokes the four commands themselves, so each stage's behaviour and output stay defined in
one place; with --json their summaries are gathered into one JSON object.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from typing import Any

import click

from pipeline.cli.aggregate import aggregate
from pipeline.cli.context import (
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_TARGET_FAILED,
    SEED,
    Context,
    json_option,
    pass_ctx,
)
from pipeline.cli.execute import execute
from pipeline.cli.profile import fail_on_regression_option, profile
from pipeline.cli.recommend import recommend
from pipeline.cli.slo import slo_option
from pipeline.cli.ui import echo_json
from schemas import Slo

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--scenario", "scenarios", multiple=True, metavar="NAME", help="Scenario to run (repeatable)."
)
@click.option(
    "--target", "targets", multiple=True, metavar="NAME", help="Target to run against (repeatable)."
)
@click.option(
    "--requests", type=click.IntRange(min=1), default=None, help="Override expected_operations."
)
@click.option("--seed", type=SEED, default=None, help="Seed for prompt choice and arrivals.")
@click.option("--no-preflight", is_flag=True, help="Skip execute's pre-flight request per target.")
@slo_option
@fail_on_regression_option
@json_option
@pass_ctx
@click.pass_context
def run(
    click_ctx: click.Context,
    ctx: Context,
    scenarios: tuple[str, ...],
    targets: tuple[str, ...],
    requests: int | None,
    seed: int | None,
    no_preflight: bool,
    fail_on_regression: bool,
    as_json: bool,
    slo: Slo | None = None,
) -> int:
    """execute, aggregate, profile and recommend in order (for cron).

    Stops at the first stage that fails (its exit code is returned; 130 if execute was
    interrupted). When every attempt against some target failed, the other stages still run
    and the exit code is 4. With --fail-on-regression, exits 3 after all four stages when a
    profile shows a degrading trend or change point (4 wins over 3).
    """
    steps: list[tuple[str, click.Command, dict[str, Any]]] = [
        (
            "execute",
            execute,
            {
                "scenarios": scenarios,
                "targets": targets,
                "requests": requests,
                "concurrency": None,
                "rate": None,
                "duration": None,
                "seed": seed,
                "no_preflight": no_preflight,
            },
        ),
        ("aggregate", aggregate, {"full": False, "skip_corrupt": False, "slo": slo}),
        ("profile", profile, {"fail_on_regression": fail_on_regression}),
        ("recommend", recommend, {}),
    ]
    summary: dict[str, Any] = {}
    final = EXIT_OK
    for name, command, kwargs in steps:
        if as_json:
            captured = io.StringIO()
            with redirect_stdout(captured):
                code = click_ctx.invoke(command, **kwargs, as_json=True)
            summary[name] = json.loads(captured.getvalue())
        else:
            code = click_ctx.invoke(command, **kwargs, as_json=False)
        if code == EXIT_TARGET_FAILED and name == "execute":
            final = EXIT_TARGET_FAILED  # the failures are events: the stages still run on them
        elif code == EXIT_REGRESSION and name == "profile":
            final = final or EXIT_REGRESSION
        elif code != EXIT_OK:
            final = code
            break
    if as_json:
        summary["exit_code"] = final
        echo_json(summary)
    return final


COMMANDS = [run]
