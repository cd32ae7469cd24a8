"""`pipeline events`: the raw request events, filtered, without writing code.

Why: a run whose requests all failed says so in its events (`error_type`, `http_status`,
`error_message`), and until now nothing showed them but a polars session. This reads the event
log as `aggregate` does (the same replay, older files included) and prints a table on a
terminal, or every column as JSON lines or CSV for scripts.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click
import polars as pl

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.ui import print_table
from pipeline.errors import InputError
from pipeline.store.eventlog import EventLog
from schemas import ERROR_TYPES

__all__ = ["COMMANDS", "latest_run_id"]

_WHO = ("run_id", "scenario", "target")
"""Said once in the title when every row shares it, else a column: the table fits 80 columns."""
_SHOWN = {
    "#": "request_index",
    "try": "attempt",
    "status": "status",
    "error": "error_type",
    "http": "http_status",
    "ms": "latency_ms",
    "ttft": "ttft_ms",
    "tokens": "output_tokens",
}
_STATUSES = ("ok", "error", "timeout", "cancelled")


def latest_run_id(log: EventLog) -> str | None:
    """The run whose first `started` event is the latest (run ids sort by start time too)."""
    runs = log.replay("runs").frame.filter(pl.col("kind") == "started")
    found = runs.group_by("run_id").agg(pl.col("at").min()).sort("at", "run_id").collect()
    return str(found["run_id"][-1]) if found.height else None


def _plain(value: Any) -> Any:
    """A cell for CSV: lists as JSON, instants as ISO text."""
    if isinstance(value, list):
        return json.dumps(value)
    return value.isoformat() if hasattr(value, "isoformat") else value


@click.command()
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this run.")
@click.option("--last", is_flag=True, help="Only the latest run.")
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME", help="Repeatable.")
@click.option("--target", "targets", multiple=True, metavar="NAME", help="Repeatable.")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice(_STATUSES), help="Repeatable."
)
@click.option(
    "--error-type",
    "error_types",
    multiple=True,
    type=click.Choice(ERROR_TYPES),
    help="Repeatable.",
)
@click.option("--warmup/--no-warmup", default=False, help="Include warmup requests.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many (default: 40 in a table, all with --json/--csv).",
)
@click.option("--csv", "as_csv", is_flag=True, help="Every column as CSV on stdout.")
@json_option
@pass_ctx
def events(
    ctx: Context,
    run_id: str | None,
    last: bool,
    scenarios: tuple[str, ...],
    targets: tuple[str, ...],
    statuses: tuple[str, ...],
    error_types: tuple[str, ...],
    warmup: bool,
    limit: int | None,
    as_csv: bool,
    as_json: bool,
) -> int:
    """Show request events (one per attempt), oldest first: filter by run, scenario, target,
    status, error type.

    A table on a terminal (the failed ones say why in error_message); --json prints one JSON
    object per line and --csv every column, for scripts. Exit 2 when the data directory holds
    no events at all (is --data-dir right?).
    """
    if run_id and last:
        raise click.UsageError("--run and --last: choose one")
    log = EventLog(ctx.store)
    if not log.files("requests"):
        raise InputError(f"no request events under {ctx.store.location} (is --data-dir right?)")
    if last:
        run_id = latest_run_id(log)
    frame = log.replay("requests", run_ids=[run_id] if run_id else None).frame
    filters = [
        (pl.col("scenario"), scenarios),
        (pl.col("target"), targets),
        (pl.col("status"), statuses),
        (pl.col("error_type"), error_types),
    ]
    for column, wanted in filters:
        if wanted:
            frame = frame.filter(column.is_in(list(wanted)))
    if not warmup:
        frame = frame.filter(~pl.col("warmup"))
    frame = frame.sort("started_at", "event_id")
    cap = limit or (None if (as_json or as_csv) else 40)
    total = frame.select(pl.len()).collect().item()
    rows = (frame.head(cap) if cap else frame).collect()
    if as_json:
        for row in rows.to_dicts():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(rows.columns)
        for values in rows.iter_rows():
            writer.writerow([_plain(v) for v in values])
    else:
        _print_events(rows, total)
        for line in _shared_runs(log, rows):
            sys.stdout.write(line + "\n")
        if total > rows.height:
            ctx.info(f"{total - rows.height} more: --limit N, or --json / --csv for all")
    return EXIT_OK


def _shared_runs(log: EventLog, rows: pl.DataFrame) -> list[str]:
    """A line per run shown that runners shared: its status across the shards, so a partial
    run's events are never taken for the whole run's."""
    from stages.aggregate.status import overall, run_status, status_text

    if not rows.height or "shard" not in rows.columns or rows["shard"].null_count() == rows.height:
        return []
    run_ids = sorted(set(rows.get_column("run_id").to_list()))
    states = run_status(log.replay("runs", run_ids=run_ids).frame.collect())
    lines = []
    for run_id in run_ids:
        status, shards, missing = overall(states.filter(pl.col("run_id") == run_id))
        if shards is not None:
            lines.append(f"run {run_id}: {status_text(status, shards, missing)}")
    return lines


def _print_events(rows: pl.DataFrame, total: int) -> None:
    """The table (times in ms), then each distinct error message with its count: the message
    is what a person reads, and a column of it would not fit."""
    shared = [c for c in _WHO if rows.height and rows[c].n_unique() == 1]
    said = " · ".join(f"{c.removesuffix('_id')} {rows[c][0]}" for c in shared)
    columns = [c for c in _WHO if c not in shared] + list(_SHOWN)
    table = rows.with_columns(
        (pl.col("latency_us") / 1000).round(1).alias("latency_ms"),
        (pl.col("ttft_us") / 1000).round(1).alias("ttft_ms"),
    ).select(
        *(c for c in _WHO if c not in shared), *(pl.col(v).alias(k) for k, v in _SHOWN.items())
    )
    title = f"request events ({rows.height} of {total}; times in ms)" + (
        f"\n{said}" if said else ""
    )
    print_table(title, table.to_dicts(), columns)
    messages = (
        rows.filter(pl.col("error_message").is_not_null())
        .group_by("target", "error_message", maintain_order=True)
        .len()
    )
    if messages.height:
        sys.stdout.write("error messages:\n")
        for target, message, count in messages.iter_rows():
            sys.stdout.write(f"  {target} ×{count}: {message}\n")


COMMANDS = [events]
