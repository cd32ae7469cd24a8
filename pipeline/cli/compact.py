"""`pipeline compact`: merge each closed partition's event files into one."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

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
from pipeline.store.maintenance import compact as compact_events
from pipeline.text import counted

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--table", "tables", multiple=True, type=TABLE_CHOICE, help="Only these tables (repeatable)."
)
@click.option(
    "--before",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Compact partitions dated before this day (default: today, UTC).",
)
@click.option(
    "--skip-corrupt", is_flag=True, help="Move unreadable files to quarantine/ and go on."
)
@json_option
@pass_ctx
def compact(
    ctx: Context, tables: tuple[str, ...], before: object, skip_corrupt: bool, as_json: bool
) -> int:
    """Merge the small files of each closed date partition into one (dropping duplicate events).

    Crash-safe: the set of readable events is the same at every moment.
    """
    day: date | None = before.date() if hasattr(before, "date") else None
    with ctx.store.housekeeping(ctx.lock("compact")):
        results = compact_events(
            EventLog(ctx.store), tables or None, before=day, skip_corrupt=skip_corrupt
        )
    rows = [asdict(r) for r in results]
    if as_json:
        echo_json(rows)
    elif rows and not ctx.quiet:
        print_table(
            "compacted",
            rows,
            ["table", "date", "files_in", "events", "duplicates_dropped", "quarantined"],
        )
    elif not rows:
        ctx.info("nothing to compact")
    quarantined = sum(r.quarantined for r in results)
    if quarantined:
        moved = counted(quarantined, "corrupt file")
        ctx.info(f"moved {moved} to {ctx.store.where('quarantine')}")
    return EXIT_OK


COMMANDS = [compact]
