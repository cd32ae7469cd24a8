"""`pipeline aggregate`: replay the request events into the results and time series."""

from __future__ import annotations

import click
import polars as pl

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.slo import slo_option, slo_policy
from pipeline.cli.ui import ESTIMATED_NOTE, echo_json, mark_estimated, print_table
from pipeline.text import counted
from schemas import Slo

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--full/--incremental",
    "full",
    default=True,
    show_default=True,
    help="Rebuild every run, or only runs not yet final in the output (same bytes either way).",
)
@click.option(
    "--skip-corrupt",
    is_flag=True,
    help="Move unreadable event files to quarantine/ and aggregate without them.",
)
@slo_option
@json_option
@pass_ctx
def aggregate(
    ctx: Context, full: bool, skip_corrupt: bool, as_json: bool, slo: Slo | None = None
) -> int:
    """Replay request events into results/benchmark_results.parquet and timeseries.parquet.

    With an SLO (--slo, else the scenario's `slo`, else the one recorded with the run) the
    results also hold its attainment and goodput, re-derived from the stored events.
    """
    from stages.aggregate import run_aggregate

    report = run_aggregate(
        ctx.store,
        ctx.config.price,
        incremental=not full,
        skip_corrupt=skip_corrupt,
        lock=ctx.lock("aggregate"),
        slo=slo_policy(ctx, slo),
    )
    if report.quarantined:
        moved = counted(len(report.quarantined), "corrupt event file")
        ctx.info(f"quarantined {moved} under quarantine/")
    if report.unpriced_models:
        ctx.info(
            f"warning: no price for {'model' if len(report.unpriced_models) == 1 else 'models'} "
            f"{', '.join(report.unpriced_models)}: their cost "
            "columns are null; add [prices.<model>] to the config to price them"
        )
    rows = report.rebuilt.select(
        "run_id",
        "scenario",
        "target",
        pl.col("operations").alias("ops"),
        "error_rate",
        pl.col("latency_p50_ms").alias("p50_ms"),
        pl.col("latency_p95_ms").alias("p95_ms"),
        pl.col("throughput_rps").alias("rps"),
        pl.col("cost_usd").alias("cost_usd"),
        pl.col("run_status").alias("status"),
        "shards",
        "missing_shards",
        "tokens_estimated",
        "slo",
        pl.col("slo_attainment").alias("attainment"),
        pl.col("goodput_rps").alias("goodput"),
        "slo_met",
    ).to_dicts()
    if as_json:
        echo_json(
            {
                "mode": report.mode,
                "results": str(report.results_path),
                "timeseries": str(report.timeseries_path),
                "rows": report.total_rows,
                "timeseries_rows": report.timeseries_rows,
                "rebuilt": rows,
                "unpriced_models": list(report.unpriced_models),
                "quarantined": [str(p) for p in report.quarantined],
            }
        )
    elif not ctx.quiet:
        title = (
            f"aggregate ({report.mode}): {counted(len(rows), 'result')} built, "
            f"{report.total_rows} in {report.results_path}"
        )
        columns = ["run_id", "scenario", "target", "status", "ops", "error_rate"]
        from stages.aggregate.status import status_text

        # A shared run says how many shards played it, and which did not finish.
        rows = [
            {**row, "status": status_text(row["status"], row["shards"], row["missing_shards"])}
            for row in rows
        ]
        estimated = mark_estimated(rows, ["cost_usd"])
        shown = [*columns, "p50_ms", "p95_ms", "rps", "cost_usd"]
        if any(row["slo"] is not None for row in rows):  # only when some result has an SLO
            shown += ["attainment", "goodput"]
        print_table(title, rows, shown)
        if estimated:
            ctx.info(ESTIMATED_NOTE)
    return EXIT_OK


COMMANDS = [aggregate]
