"""`pipeline compare`: targets side by side for a scenario."""

from __future__ import annotations

import click
import polars as pl

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.ui import ESTIMATED_NOTE, echo_json, mark_estimated, print_table
from pipeline.errors import InputError
from stages.aggregate.run import read_results
from stages.compare.transform import compare as compare_targets

__all__ = ["COMMANDS"]


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

    Uses each target's latest completed (or timed-out) run at its latest mode and concurrency
    that measured at least [compare] min_requests attempts (20 by default), and says which runs
    it passed over and why. The score's weights come from the config's [compare_weights]
    (latency 0.4, cost 0.3, reliability 0.3 by default).
    """
    results = read_results(ctx.data_dir)
    known = sorted(results["scenario"].unique().to_list())
    for name in scenarios:
        if name not in known:
            raise InputError(
                f"no results for scenario {name!r}; scenarios with results: {', '.join(known) or 'none'}"
            )
    config = ctx.config.config
    comparisons = [
        compare_targets(results, name, config.compare_weights, config.compare.min_requests)
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
                    "min_requests": c.min_requests,
                    "mixed_settings": c.mixed_settings,
                    "passed_over": [p.as_dict() for p in c.passed_over],
                    "slo": c.slo_sentence,
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
        slo_columns = ["slo_attainment", "goodput_rps"] if c.slo_sentence else []
        print_table(
            f"compare: {c.scenario}",
            rows,
            [
                "target",
                "run_id",
                "operations",
                "successful",
                "latency_p50_ms",
                "latency_p95_ms",
                "ttft_p50_ms",
                "throughput_rps",
                "success_rate",
                "usd_per_million_output_tokens",
                "score",
                *slo_columns,
            ],
        )
        click.echo(
            f"fastest: {c.fastest}   most cost-effective: {c.most_cost_effective}   most reliable: {c.most_reliable}"
        )
        if c.slo_sentence:
            click.echo(c.slo_sentence)
        for passed in c.passed_over:
            click.echo(passed.sentence())
        if c.mixed_settings:
            settings = ", ".join(
                f"{r['target']} {r['mode']} concurrency {r['concurrency']}" for r in rows
            )
            click.echo(
                f"(the targets ran at different settings, so they compare unlike: {settings})"
            )
        if not c.cost_included and rows:
            click.echo("(cost is left out of the score: at least one target has no price)")
        if estimated:
            click.echo(ESTIMATED_NOTE)
    return EXIT_OK


COMMANDS = [compare]
