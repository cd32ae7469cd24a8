"""`pipeline profile`, `pipeline recommend` and `pipeline compare`: what the results mean."""

from __future__ import annotations

import click
import polars as pl

from pipeline.cli.context import EXIT_OK, EXIT_REGRESSION, Context, json_option, pass_ctx
from pipeline.cli.ui import ESTIMATED_NOTE, echo_json, mark_estimated, print_table
from pipeline.errors import InputError
from pipeline.store.layout import Layout
from pipeline.store.outputs import read_output
from stages.compare.transform import compare as compare_targets
from stages.profile.run import ProfileSummary, run_profile
from stages.profile.trends import min_runs_for_direction
from stages.recommend.run import RecommendSummary, run_recommend

__all__ = ["COMMANDS", "fail_on_regression_option", "report_profile", "report_recommend"]

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


def report_recommend(ctx: Context, summary: RecommendSummary, as_json: bool) -> None:
    rows = summary.recommendations.select(
        "priority", "rule_id", "scenario", "target", "title"
    ).to_dicts()
    if as_json:
        echo_json(
            {"path": str(summary.path), "markdown": str(summary.markdown), "recommendations": rows}
        )
        return
    print_table(
        f"recommendations ({summary.markdown})",
        rows,
        ["priority", "rule_id", "scenario", "target", "title"],
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


@click.command()
@json_option
@pass_ctx
def recommend(ctx: Context, as_json: bool) -> int:
    """Optimization recommendations into recommendations/ (Parquet and Markdown).

    Rules over the latest results and the profiles, each with priority, evidence and run ids;
    when each rule fires is set in the config's [recommend] table.
    """
    summary = run_recommend(ctx.data_dir, ctx.config.config.recommend, ctx.lock("recommend"))
    report_recommend(ctx, summary, as_json)
    return EXIT_OK


@click.command()
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    help="Scenario to compare (repeatable; default: all with results).",
)
@json_option
@pass_ctx
def compare(ctx: Context, scenarios: tuple[str, ...], as_json: bool) -> int:
    """Targets side by side for a scenario: fastest, cheapest, most reliable, overall 0-100 score.

    Uses each target's latest completed run. The score's weights come from the config's
    [compare_weights] (latency 0.4, cost 0.3, reliability 0.3 by default).
    """
    results = read_output(Layout(ctx.data_dir).results, "aggregate")
    known = sorted(results["scenario"].unique().to_list())
    for name in scenarios:
        if name not in known:
            raise InputError(
                f"no results for scenario {name!r}; scenarios with results: {', '.join(known) or 'none'}"
            )
    comparisons = [
        compare_targets(results, name, ctx.config.config.compare_weights)
        for name in scenarios or known
    ]
    if as_json:
        echo_json(
            [
                {
                    "scenario": c.scenario,
                    "fastest": c.fastest,
                    "most_cost_effective": c.most_cost_effective,
                    "most_reliable": c.most_reliable,
                    "cost_in_score": c.cost_included,
                    "targets": c.table.to_dicts(),
                }
                for c in comparisons
            ]
        )
        return EXIT_OK
    for c in comparisons:
        table = c.table.with_columns(pl.col("success_rate").round(4), pl.col("score").round(1))
        rows = table.to_dicts()
        estimated = mark_estimated(rows, ["usd_per_million_output_tokens"])
        print_table(
            f"compare: {c.scenario}",
            rows,
            [
                "target",
                "latency_p50_ms",
                "latency_p95_ms",
                "ttft_p50_ms",
                "throughput_rps",
                "success_rate",
                "usd_per_million_output_tokens",
                "score",
            ],
        )
        click.echo(
            f"fastest: {c.fastest}   most cost-effective: {c.most_cost_effective}   most reliable: {c.most_reliable}"
        )
        if not c.cost_included:
            click.echo("(cost is left out of the score: at least one target has no price)")
        if estimated:
            click.echo(ESTIMATED_NOTE)
    return EXIT_OK


COMMANDS = [profile, recommend, compare]
