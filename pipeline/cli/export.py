"""`pipeline export`: the event log as Hive-partitioned Parquet or a Delta table."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.context import EXIT_OK, TABLE_CHOICE, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json, print_table, progress
from pipeline.text import counted

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "delta"]),
    default="parquet",
    show_default=True,
    help="parquet: <table>/date=YYYY-MM-DD/part-0.parquet; delta: one Delta table per event "
    "table, partitioned by date (needs the [delta] extra).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Export folder, outside the data directory (default: DATA/export/<format>).",
)
@click.option(
    "--table", "tables", multiple=True, type=TABLE_CHOICE, help="Only these tables (repeatable)."
)
@json_option
@pass_ctx
def export(ctx: Context, fmt: str, out: Path | None, tables: tuple[str, ...], as_json: bool) -> int:
    """Write the events for DuckDB, Spark, pandas, polars, Ray, Daft: one folder per table.

    Exactly the events a replay reads, each once, ordered by time. Incremental: only days whose
    event files changed since the last export are written again (the same events give the same
    Parquet bytes); days no longer in the event log (archived) are taken out. Each day is
    replaced whole (Parquet: one rename; Delta: one commit), so an interrupted export leaves
    every reader the old day or the new one, never half of one. See docs/reading-elsewhere.md.
    """
    from stages.export import run_export

    with progress("export", None, ctx.show_progress and not as_json) as bar:
        report = run_export(
            ctx.data_dir,
            fmt,
            out=out,
            tables=tables or None,
            lock=ctx.lock("export"),
            on_plan=lambda total: bar.update(total=total),
            on_step=lambda label: bar.advance(status=label),
        )
    rows = [
        {
            "table": t.table,
            "written": len(t.written),
            "removed": len(t.removed),
            "unchanged": t.unchanged,
            "rows": t.rows,
            "path": str(t.path),
        }
        for t in report.tables
    ]
    if as_json:
        echo_json({"format": report.format, "path": str(report.path), "tables": rows})
    elif not ctx.quiet:
        written = sum(len(t.written) for t in report.tables)
        title = f"export ({fmt}): {counted(written, 'partition')} written to {report.path}"
        print_table(title, rows, ["table", "written", "removed", "unchanged", "rows"])
    return EXIT_OK


COMMANDS = [export]
