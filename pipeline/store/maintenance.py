"""Housekeeping of the event log: compaction of closed partitions, archiving of old ones.

Compaction is crash-safe at every step because readers already follow one rule: a compacted file
lists, in its metadata, the files it replaces (name, size, digest), and those are skipped while
they match. So the steps are (1) write the merged file to staging, (2) publish it (from now on
the inputs are invisible), (3) delete the inputs. A kill between any two steps leaves the same
set of events readable, and the next compaction finishes the job: it deletes only files a merged
file holds byte for byte, never a later file that happens to carry a listed name.

The merged file's name is a digest of its inputs' names *and fingerprints*, so finding that name
taken means exactly these inputs were merged before (a crash after publishing): that file is the
result. On an object store "publish" is a create-only PUT of the merged file: the same steps, the
same guarantees, and two compactions racing agree (the second finds the name taken). Every
delete and move goes through the store (locally `pipeline.store.fsutil`, so neither follows a
link planted in the data directory: a linked partition stops the command, naming it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import CorruptEventFileError
from pipeline.store.eventlog import (
    COMPACTED_PREFIX,
    EventFile,
    EventLog,
    Fingerprint,
    read_event_file,
    replaces_metadata,
    write_ipc,
)
from pipeline.store.evolution import ReadPlan
from pipeline.store.layout import archive_key, partition_key
from schemas import TABLES

__all__ = ["ArchiveResult", "CompactResult", "archive", "compact"]


@dataclass(frozen=True)
class CompactResult:
    table: str
    date: str
    files_in: int
    events: int
    duplicates_dropped: int
    quarantined: int


@dataclass(frozen=True)
class ArchiveResult:
    table: str
    date: str
    files: int


def _today() -> date:
    return datetime.now(UTC).date()


def _read_all(
    log: EventLog, files: list[EventFile], skip_corrupt: bool
) -> tuple[list[pa.Table], list[tuple[EventFile, Fingerprint]], int]:
    tables, used, bad = [], [], []
    for item in files:
        try:
            table, fingerprint = read_event_file(log.store, item)
        except CorruptEventFileError:
            bad.append(item)
            continue
        tables.append(table)
        used.append((item, fingerprint))
    if bad and not skip_corrupt:
        raise CorruptEventFileError([b.where for b in bad], "cannot be read; compaction stopped")
    log.quarantine(bad)
    return tables, used, len(bad)


def compact_partition(
    log: EventLog, table: str, day: str, *, skip_corrupt: bool = False
) -> CompactResult | None:
    store = log.store
    files, leftovers = log.listing(table, day)
    if leftovers:  # finish a compaction a crash interrupted
        store.delete([item.key for item in leftovers])
    if len(files) <= 1:
        return None
    tables, used, quarantined = _read_all(log, files, skip_corrupt)
    if not used:
        return CompactResult(table, day, len(files), 0, 0, quarantined)
    spec = TABLES[table]
    # Each file read by its schema's plan (an older one's missing columns as a replay reads
    # them), then one table: every file now has the table's exact schema.
    plans: dict[tuple[str, ...], ReadPlan] = {}
    conformed = []
    for part in tables:
        names = tuple(part.schema.names)
        plan = plans.get(names) or plans.setdefault(names, ReadPlan.of(spec, part.schema))
        conformed.append(plan.table(part, spec.schema))
    merged = pa.concat_tables(conformed)
    before = merged.num_rows
    merged = _dedupe(merged)
    merged = merged.sort_by([(spec.time_column, "ascending"), ("event_id", "ascending")])
    replaced = sorted((item.name, fingerprint) for item, fingerprint in used)
    key = "\n".join(f"{name} {f.size} {f.blake2b}" for name, f in replaced)
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    metadata = replaces_metadata(replaced)
    final = f"{partition_key(table, day)}/{COMPACTED_PREFIX}-{digest}.arrow"
    # None (the name taken): these very inputs were merged before a crash, or by a compaction
    # racing this one on an object store: that file is the result.
    store.create(lambda h: write_ipc(merged, h, metadata), [final])
    store.delete([item.key for item, _ in used])
    return CompactResult(
        table, day, len(used), merged.num_rows, before - merged.num_rows, quarantined
    )


def _dedupe(table: pa.Table) -> pa.Table:
    """Keep the first row of each event_id (a retried publish can only ever repeat a whole event)."""
    ids = table.column("event_id")
    indices = pa.table({"event_id": ids, "i": pa.array(range(table.num_rows), pa.int64())})
    first = indices.group_by("event_id", use_threads=False).aggregate([("i", "min")])
    keep = pc.sort_indices(first.column("i_min"))
    return table.take(pc.take(first.column("i_min"), keep))


def compact(
    log: EventLog,
    tables: Iterable[str] | None = None,
    *,
    before: date | None = None,
    skip_corrupt: bool = False,
) -> list[CompactResult]:
    """Compact every partition dated before `before` (default: today, UTC: a closed day)."""
    cutoff = (before or _today()).isoformat()
    results = []
    for table in tables or TABLES:
        for day in log.partitions(table):
            if day < cutoff:
                result = compact_partition(log, table, day, skip_corrupt=skip_corrupt)
                if result is not None:
                    results.append(result)
    return results


def archive(
    log: EventLog, older_than_days: int, tables: Iterable[str] | None = None
) -> list[ArchiveResult]:
    """Move partitions older than N days to `DATA/archive/events/` (not read by replay)."""
    cutoff = (_today() - timedelta(days=older_than_days)).isoformat()
    results = []
    for table in tables or TABLES:
        for day in log.partitions(table):
            if day >= cutoff:
                continue
            moved = log.store.move_folder(partition_key(table, day), archive_key(table, day))
            results.append(ArchiveResult(table, day, moved))
    return results
