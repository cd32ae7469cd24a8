"""Export the event log, partition by partition, writing only the partitions whose files changed.

Read through the replay API (`EventLog.listing` and `replay`), under the data directory's lock
(a `compact` or `archive` cannot move files mid-export). The export mirrors the event log: a
partition no longer in the log (archived) is taken out of the export too, so every engine
reads exactly the events a replay reads.

Where it goes: by default `DATA/export/<format>/<table>`, inside the data directory, so nothing
is written outside it unless the user names `--out`; an `--out` inside the data directory is
refused (the default is the one place there), as is one holding files the export did not write.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pipeline.errors import InputError, SymlinkRefusedError
from pipeline.store.eventlog import EventLog
from pipeline.store.fsutil import store_error
from pipeline.store.layout import Layout, partition_key
from pipeline.store.local import LocalStore
from pipeline.store.location import Location
from pipeline.store.lock import DEFAULT_LOCK, LockOptions, exclusive_lock
from schemas import TABLES
from stages.export.sinks import DeltaSink, ParquetSink, Sink
from stages.export.transform import partition_day, partition_rows, source_key

__all__ = ["FORMATS", "ExportReport", "TableExport", "export_root", "run_export"]

FORMATS = ("parquet", "delta")


@dataclass(frozen=True)
class TableExport:
    table: str
    path: Path
    written: list[str] = field(default_factory=list)
    """The days exported (new or changed since the last export)."""
    removed: list[str] = field(default_factory=list)
    """The days taken out (no longer in the event log: archived)."""
    unchanged: int = 0
    rows: int = 0
    """Rows written this time."""


@dataclass(frozen=True)
class ExportReport:
    format: str
    path: Path
    tables: list[TableExport]


@dataclass(frozen=True)
class _Step:
    table: str
    day: str
    key: str | None
    """None: remove the day."""


def export_root(log: EventLog, fmt: str, out: Path | None) -> tuple[Path, Path]:
    """(root, folder): every write is confined below `root`; the tables go in `folder`."""
    if fmt not in FORMATS:
        raise InputError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    local = isinstance(log.store, LocalStore)
    if out is None:
        if not local:
            raise InputError(
                f"--out: the data directory {log.store.location} is not a local folder: "
                "name a local folder to export into"
            )
        return log.data_dir, Layout(log.data_dir).export(fmt)
    if local:
        here, there = Path(os.path.realpath(log.data_dir)), Path(os.path.realpath(out))
        if there == here or here in there.parents:
            raise InputError(
                f"--out: {out} is inside the data directory {log.data_dir}; leave --out out to "
                f"export to {Layout(log.data_dir).export(fmt)}"
            )
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is not a directory")
    return out, out


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise store_error(out, exc) from exc


def _sink(fmt: str, root: Path, folder: Path, table: str) -> Sink:
    if fmt == "delta":
        return DeltaSink(root, folder / table)
    return ParquetSink(root, folder / table, Layout(root).staging)


def _wanted(log: EventLog, table: str) -> dict[str, str]:
    """Every partition of the log with the key of its visible files."""
    spec = TABLES[table]
    wanted = {}
    for day in log.partitions(table):
        partition_day(log.store.where(partition_key(table, day)), day)
        visible, _ = log.listing(table, day)
        if visible:
            wanted[day] = source_key(spec, (f.name for f in visible))
    return wanted


def _plan(wanted: dict[str, str], held: dict[str, str], table: str) -> list[_Step]:
    steps = [_Step(table, d, k) for d, k in sorted(wanted.items()) if held.get(d) != k]
    return steps + [_Step(table, d, None) for d in sorted(held) if d not in wanted]


def run_export(
    data_dir: Location,
    fmt: str,
    *,
    out: Path | None = None,
    tables: Iterable[str] | None = None,
    lock: LockOptions = DEFAULT_LOCK,
    on_plan: Callable[[int], None] = lambda total: None,
    on_step: Callable[[str], None] = lambda label: None,
) -> ExportReport:
    """Export `tables` (default all) as `fmt`; say how many partitions will be written
    (`on_plan`), then each one as it is done (`on_step`: "requests 2026-01-02")."""
    log = EventLog(data_dir)
    log.store.require()
    root, folder = export_root(log, fmt, out)
    names: Sequence[str] = list(tables or TABLES)
    with ExitStack() as held:
        # The lock compact and archive hold: neither can move a file while it is read.
        held.enter_context(log.store.housekeeping(lock))
        if not log.store.entries("events"):
            raise InputError(
                f"no events under {log.events_dir}: nothing to export "
                "(run `pipeline execute` first, or check --data-dir)"
            )
        inside = isinstance(log.store, LocalStore) and root == log.data_dir
        if not inside:
            # Two exports from different data directories into one --out take turns too: the
            # same lock file (and staging sweep) as a data directory's, in the --out folder.
            _make_out(root)
            held.enter_context(exclusive_lock(root, lock))
        try:
            return _export(log, fmt, root, folder, names, on_plan, on_step)
        except SymlinkRefusedError as exc:
            if inside:
                raise
            raise SymlinkRefusedError(exc.path, "the export directory") from None


def _export(
    log: EventLog,
    fmt: str,
    root: Path,
    folder: Path,
    names: Sequence[str],
    on_plan: Callable[[int], None],
    on_step: Callable[[str], None],
) -> ExportReport:
    sinks = {t: _sink(fmt, root, folder, t) for t in names}
    wanted = {t: _wanted(log, t) for t in names}
    plans = {t: _plan(wanted[t], sinks[t].exported(), t) for t in names}
    on_plan(sum(len(p) for p in plans.values()))
    reports = []
    for table, steps in plans.items():
        sink, rows = sinks[table], 0
        for step in steps:
            if step.key is None:
                sink.remove(step.day)
            else:
                day = date.fromisoformat(step.day)
                replay = log.replay(table, since=day, until=day)
                spec = replay.spec
                batches = [b for read in replay.batch_sources(spec.schema.names) for b in read()]
                data = partition_rows(spec, batches)
                sink.write(step.day, data, step.key)
                rows += data.num_rows
            on_step(f"{table} {step.day}")
        written = [s.day for s in steps if s.key is not None]
        reports.append(
            TableExport(
                table,
                folder / table,
                written,
                [s.day for s in steps if s.key is None],
                len(wanted[table]) - len(written),
                rows,
            )
        )
    return ExportReport(fmt, folder, reports)
