"""What one exported partition holds, and the key that says which event files it was built from.

Pure: no file is opened here. The exported rows of a day are exactly what a replay of that day
reads (older files with their missing columns filled in), with duplicate events dropped by the
rule compaction uses, in one fixed order: so the same events always give the same rows, whatever
files (small ones, a compacted one, late arrivals) they sit in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date

import pyarrow as pa

from pipeline.errors import StoreError
from pipeline.store.maintenance import first_occurrences
from schemas import TableSpec

__all__ = ["EXPORT_VERSION", "partition_day", "partition_rows", "source_key"]

EXPORT_VERSION = 1
"""Part of every source key: a version that exports different rows or types bumps it, and its
first export rewrites every partition instead of keeping what the older one wrote."""


def source_key(spec: TableSpec, names: Iterable[str]) -> str:
    """A digest of a partition's visible event files (their names) and of the table's schema.

    Names suffice: a published event file is never modified and no name repeats (`EventWriter`;
    a merged file's name is a digest of its inputs), so the same set means the same events. A new file, a compaction, a
    quarantined file or a schema with a new column all change the key, and only then is the
    partition exported again."""
    lines = [f"v{EXPORT_VERSION}", str(spec.schema)]
    lines += sorted(names)
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=16).hexdigest()


def partition_day(folder: str, day: str) -> date:
    """The day of a `date=YYYY-MM-DD` folder; a folder named like one but not a real day (a
    planted `date=2026-13-45`) is refused, since engines would read it as a partition value."""
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise StoreError(f"{folder} is not a date partition: {day!r} is not a day") from None


def partition_rows(spec: TableSpec, batches: Sequence[pa.RecordBatch]) -> pa.Table:
    """One day's events: the table's exact schema, each event once, ordered by time and id."""
    # The batches carry the table's types with every field nullable (how a replay reads them);
    # the cast gives back the declared nullability, which Parquet and Delta keep as "required".
    found = list(batches)
    table = (
        pa.Table.from_batches(found, schema=found[0].schema) if found else spec.schema.empty_table()
    )
    table = table.cast(spec.schema)
    keep = first_occurrences(table.column("event_id"))
    if len(keep) < table.num_rows:  # a copy only when there is a duplicate to drop (rare)
        table = table.take(keep)
    return table.sort_by([(spec.time_column, "ascending"), ("event_id", "ascending")])
