"""`pipeline profile`: trends across runs; the regression gate (`--fail-on-regression`)."""

from __future__ import annotations

from typing import Any

import click

from pipeline.cli.context import EXIT_OK, EXIT_REGRESSION, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json, print_table
from stages.profile.display import confidence_text, trend_text
from stages.profile.run import ProfileSummary, run_profile
from stages.profile.trends import min_runs_for_direction

__all__ = ["COMMANDS"]


fail_on_regression_option = click.option(
    "--fail-on-regression",
    is_flag=True,
    help="Exit 3 when a degrading trend or change point is found (after writing every output).",
)


_METRICS = ("latency", "throughput", "error_rate", "cost_efficiency")
_ALL_METRICS = (*_METRICS, "capacity")
"""`capacity`: the sweeps' answer (`stages.profile.transform.CAPACITY`), shown when swept."""
_PROFILE_COLUMNS = [
    "scenario",
    "target",
    "data_points",
    *(f"{m}_trend" for m in _METRICS),
    "overall_confidence",
    "regression",
]
_JSON_COLUMNS = [
    *_PROFILE_COLUMNS,
    *(
        f"{m}_{part}"
        for m in _ALL_METRICS
        for part in (
            "change_point_run_id",
            "change_point_relative_change",
            "change_point_direction",
            "change_point_p",
        )
    ),
    "capacity_trend",
    "capacity_relative_change",
    "capacity_confidence",
    "sweeps",
    "latest_sweep_id",
    "latest_capacity",
    "capacity_axis",
    "capacity_slo",
    "regression_reasons",
]


def _table_row(row: dict[str, Any], threshold: float) -> dict[str, Any]:
    """A profile as the table shows it: each trend beside its change point ("stable, step
    +43.0% at r7"), the confidence rounded down (never up across `threshold`), and whether it
    is a regression, so that the table agrees with the REGRESSION lines and the exit code."""
    return {
        **row,
        **{f"{m}_trend": trend_text(row, m) for m in _ALL_METRICS},
        "overall_confidence": confidence_text(row["overall_confidence"], threshold),
        "regression": "yes" if row["regression"] else "no",
    }


def report_profile(ctx: Context, summary: ProfileSummary, as_json: bool) -> None:
    rows = summary.profiles.select(_JSON_COLUMNS).to_dicts()
    if as_json:
        echo_json(
            {"path": str(summary.path), "profiles": rows, "regressions": summary.regressions.height}
        )
        return
    trends = ctx.config.config.trends
    if not ctx.quiet:
        shown = [_table_row(row, trends.confidence_threshold) for row in rows]
        swept = any(
            row["latest_sweep_id"] for row in rows
        )  # the column only when it says something
        columns = [*_PROFILE_COLUMNS[:-2], "capacity_trend", *_PROFILE_COLUMNS[-2:]]
        print_table(f"profiles ({summary.path})", shown, columns if swept else _PROFILE_COLUMNS)
    for row in summary.regressions.iter_rows(named=True):
        click.echo(
            f"REGRESSION {row['scenario']} @ {row['target']}: {row['regression_reasons']}", err=True
        )
    needed = min_runs_for_direction(trends)
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
    latency, throughput, error rate and cost efficiency, and any change point; the table shows
    each trend beside its change point and whether the row is a regression. With the default
    [trends] settings a direction needs at least 5 runs, and fewer than 3 is insufficient_data.
    """
    summary = run_profile(ctx.store, ctx.config.config.trends, ctx.lock("profile"))
    report_profile(ctx, summary, as_json)
    return EXIT_REGRESSION if fail_on_regression and summary.regressions.height else EXIT_OK


COMMANDS = [profile]
