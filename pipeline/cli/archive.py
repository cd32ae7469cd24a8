"""`pipeline archive`: move old event partitions out of the replayed log."""

from __future__ import annotations

from dataclasses import asdict

import click

from pipeline.cli.context import (
    EXIT_OK,
    TABLE_CHOICE,
    Context,
    json_option,
    pass_ctx,
)
from pipeline.cli.ui import echo_json, print_table
from pipeline.store.eventlog import EventLog
from pipeline.store.maintenance import archive as archive_events
from pipeline.text import counted

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--older-than", "days", type=click.IntRange(min=0), required=True, help="Age in days."
)
@click.option(
    "--table", "tables", multiple=True, type=TABLE_CHOICE, help="Only these tables (repeatable)."
)
@json_option
@pass_ctx
def archive(ctx: Context, days: int, tables: tuple[str, ...], as_json: bool) -> int:
    """Move event partitions older than N days under DATA/archive/ (replay no longer reads them)."""
    with ctx.store.housekeeping(ctx.lock("archive")):
        results = archive_events(EventLog(ctx.store), days, tables or None)
    rows = [asdict(r) for r in results]
    if as_json:
        echo_json(rows)
    elif rows and not ctx.quiet:
        print_table("archived", rows, ["table", "date", "files"])
    elif not rows:
        ctx.info(f"no partition older than {counted(days, 'day')}")
    return EXIT_OK


COMMANDS = [archive]
