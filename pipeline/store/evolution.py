"""How an event file written by an older schema version reads: one plan, for every reader.

Schema evolution is additive (DESIGN.md): a column added later is absent from older files and
reads as its model's plain default (`reconnects` → 0), else null. Three readers need that, and
they must agree, or a compacted file, a replay and the aggregate's scan of the same events would
differ: `EventLog.replay` (polars), `Replay.batch_sources` (pyarrow batches, the aggregate) and
compaction (whole pyarrow tables merged into one file). Each asks `ReadPlan.of` for the file's
schema and applies it in its own engine; the decision (which column is there, which is filled
with what, which is cast) is made here once per distinct schema, not per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from schemas import TableSpec

__all__ = ["ColumnPlan", "ReadPlan", "fill_value", "polars_schema"]


def fill_value(spec: TableSpec, name: str) -> bool | int | float | str | None:
    """What a column an older file lacks reads as: the model's plain default, else null."""
    fields = spec.model.model_fields
    default = fields[name].default if name in fields else None
    return default if isinstance(default, bool | int | float | str) else None


def polars_schema(spec: TableSpec) -> pl.Schema:
    """The table's schema as polars types."""
    frame = pl.from_arrow(spec.schema.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    name: str
    type: pa.DataType
    """The table's type (a file's column of another type is cast)."""
    present: bool
    fill: bool | int | float | str | None
    """What the column reads as where the file lacks it."""


@dataclass(frozen=True)
class ReadPlan:
    """How to read `columns` of a table from files of one schema."""

    columns: tuple[ColumnPlan, ...]
    options: pa.ipc.IpcReadOptions
    """Reads only the file's fields that are wanted."""
    as_is: bool
    """Every wanted column is in the file with the table's type: select, nothing to build."""

    @classmethod
    def of(
        cls, spec: TableSpec, file_schema: pa.Schema, columns: Sequence[str] | None = None
    ) -> ReadPlan:
        """The plan for files whose footer says `file_schema` (all the table's columns when
        `columns` is None)."""
        wanted = tuple(columns) if columns is not None else tuple(spec.schema.names)
        types = {f.name: f.type for f in spec.schema}
        present = set(file_schema.names)
        plans = tuple(
            ColumnPlan(name, types[name], name in present, fill_value(spec, name))
            for name in wanted
        )
        fields = sorted(file_schema.get_field_index(name) for name in wanted if name in present)
        as_is = all(p.present and file_schema.field(p.name).type == p.type for p in plans)
        return cls(plans, pa.ipc.IpcReadOptions(included_fields=fields, use_threads=False), as_is)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.columns]

    def batch_schema(self) -> pa.Schema:
        """What every batch is given: the columns, the table's types, all nullable (one schema
        for files old and new, so batches of both can be joined)."""
        return pa.schema([(p.name, p.type) for p in self.columns])

    def _arrays(self, source: pa.RecordBatch | pa.Table) -> list[pa.Array | pa.ChunkedArray]:
        rows = source.num_rows
        out: list[pa.Array | pa.ChunkedArray] = []
        for p in self.columns:
            if p.present:
                array = source.column(p.name)
                out.append(array if array.type == p.type else array.cast(p.type))
            else:
                out.append(pa.array([p.fill] * rows, p.type))
        return out

    def batch(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """One file's batch with exactly the plan's columns (`schema`: `batch_schema()`)."""
        if self.as_is:
            return pa.RecordBatch.from_arrays(batch.select(self.names).columns, schema=schema)
        return pa.RecordBatch.from_arrays(self._arrays(batch), schema=schema)

    def table(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        """One file's whole table with the table's exact schema (`spec.schema`: required
        columns stay non-null), for merging files of several versions into one."""
        arrays = [
            a if isinstance(a, pa.ChunkedArray) else pa.chunked_array([a])
            for a in self._arrays(table)
        ]
        return pa.Table.from_arrays(arrays, schema=schema)

    def frame(self, frame: pl.LazyFrame, target: pl.Schema) -> pl.LazyFrame:
        """A polars scan of files of this schema with the plan's columns (`target`: their
        polars types): the missing ones filled, then everything in order."""
        if self.as_is:
            return frame.select(self.names)
        missing = [
            pl.lit(p.fill, dtype=target[p.name]).alias(p.name)
            for p in self.columns
            if not p.present
        ]
        return frame.with_columns(missing).select(self.names)
