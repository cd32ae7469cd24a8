"""`pipeline recommend`: the rules over results and profiles, written as Parquet and Markdown."""

from __future__ import annotations

import click

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json, print_table
from stages.recommend.run import RecommendSummary, run_recommend

__all__ = ["COMMANDS"]


def report_recommend(ctx: Context, summary: RecommendSummary, as_json: bool) -> None:
    rows = summary.recommendations.select(
        "priority", "rule_id", "scenario", "target", "title"
    ).to_dicts()
    if as_json:
        echo_json(
            {
                "path": str(summary.path),
                "markdown": str(summary.markdown),
                "recommendations": rows,
                "passed_over": [p.as_dict() for p in summary.passed_over],
            }
        )
        return
    if not ctx.quiet:
        print_table(
            f"recommendations ({summary.markdown})",
            rows,
            ["priority", "rule_id", "scenario", "target", "title"],
        )
    for passed in summary.passed_over:
        ctx.info(f"not used: {passed.sentence()}")


@click.command()
@json_option
@pass_ctx
def recommend(ctx: Context, as_json: bool) -> int:
    """Optimization recommendations into recommendations/ (Parquet and Markdown).

    Rules over each configuration's run (chosen as compare chooses: [compare] min_requests) and
    the profiles, each with priority, evidence and run ids; when each rule fires is set in the
    config's [recommend] table.
    """
    config = ctx.config.config
    summary = run_recommend(ctx.store, config.recommend, config.compare, ctx.lock("recommend"))
    report_recommend(ctx, summary, as_json)
    return EXIT_OK


COMMANDS = [recommend]
