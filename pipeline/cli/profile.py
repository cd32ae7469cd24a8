"""`pipeline profile`: trends across runs; the regression gate (`--fail-on-regression`)."""

from __future__ import annotations

import click

from pipeline.cli.context import EXIT_OK, EXIT_REGRESSION, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json, print_table
from stages.profile.run import ProfileSummary, run_profile
from stages.profile.trends import min_runs_for_direction

__all__ = ["COMMANDS"]


fail_on_regression_option = click.option(
    "--fail-on-regression",
    is_flag=True,
    help="Exit 3 when a degrading trend or change point is found (after writing every output).",
)


_PROFILE_COLUMNS = [
    "scenario",
    "target",
    "data_points",
    "latency_trend",
    "throughput_trend",
    "error_rate_trend",
    "cost_efficiency_trend",
    "overall_confidence",
]


def report_profile(ctx: Context, summary: ProfileSummary, as_json: bool) -> None:
    rows = summary.profiles.select(*_PROFILE_COLUMNS, "regression_reasons").to_dicts()
    if as_json:
        echo_json(
            {"path": str(summary.path), "profiles": rows, "regressions": summary.regressions.height}
        )
        return
    print_table(f"profiles ({summary.path})", rows, _PROFILE_COLUMNS)
    for row in summary.regressions.iter_rows(named=True):
        click.echo(
            f"REGRESSION {row['scenario']} @ {row['target']}: {row['regression_reasons']}", err=True
        )
    needed = min_runs_for_direction(ctx.config.config.trends)
    if rows and all(r["data_points"] < needed for r in rows):
        ctx.info(
            f"note: a trend direction needs at least {needed} runs of the same scenario and target"
        )


@click.command()
@fail_on_regression_option
@json_option
@pass_ctx
def profile(ctx: Context, fail_on_regression: bool, as_json: bool) -> int:
    """Trends across runs into profiles/performance_profiles.parquet.

    One row per (provider, model, scenario, target): direction, relative change and confidence of
    latency, throughput, error rate and cost efficiency, and any change point. With the default
    [trends] settings a direction needs at least 5 runs, and fewer than 3 is insufficient_data.
    """
    summary = run_profile(ctx.data_dir, ctx.config.config.trends, ctx.lock("profile"))
    report_profile(ctx, summary, as_json)
    return EXIT_REGRESSION if fail_on_regression and summary.regressions.height else EXIT_OK


COMMANDS = [profile]
