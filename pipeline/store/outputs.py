"""The one writer of Parquet outputs (sorted rows, plain types, fixed settings) and their readers.

The same frame always gives the same bytes: rows are sorted by the given keys, polars-only types
(Categorical, Enum) become strings, the compression and row-group size are fixed, and nothing from
the clock goes into the file. That is what lets an object store address an output by its
content, and a writer that lost the race to publish its outputs simply build them again.

A stage's outputs are written together through its store (`Store.write_outputs`): locally every
file is staged before any is replaced, under the data directory's lock; on an object store one
pointer names them all. Readers go through `read_output`, which follows that pointer.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageInputMissingError
from pipeline.store.backend import Store, Writer
from pipeline.store.lock import DEFAULT_LOCK, LockOptions

__all__ = [
    "ROW_GROUP_SIZE",
    "find_output",
    "write_output",
    "parquet_writer",
    "plain_arrow",
    "read_output",
]

ROW_GROUP_SIZE = 128 * 1024


def plain_arrow(frame: pl.DataFrame) -> pa.Table:
    """Arrow with types any reader knows: strings, not views, categoricals or enums."""
    frame = frame.with_columns(
        pl.col(name).cast(pl.String)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Categorical | pl.Enum)
    )
    table = frame.to_arrow()
    fields = []
    for field in table.schema:
        dtype = field.type
        if pa.types.is_string_view(dtype) or pa.types.is_large_string(dtype):
            dtype = pa.string()
        elif pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype):
            dtype = pa.list_(dtype.value_type)
        fields.append(pa.field(field.name, dtype, nullable=True))
    return table.cast(pa.schema(fields))


def parquet_writer(frame: pl.DataFrame, sort_by: Sequence[str]) -> Writer:
    """What writes `frame` as an output file: sorted, plain types, fixed settings. The sort and
    the conversion run when it is called (in the store's threads, beside the other file)."""

    def write(handle: BinaryIO) -> None:
        rows = frame.sort(list(sort_by), nulls_last=True, maintain_order=True) if sort_by else frame
        pq.write_table(
            plain_arrow(rows),
            handle,
            compression="zstd",
            compression_level=3,
            row_group_size=ROW_GROUP_SIZE,
            write_statistics=True,
            use_dictionary=True,
        )

    return write


def find_output(store: Store, key: str) -> pl.DataFrame | None:
    """The current output at `key`, or None when it has not been written."""
    data = store.read_output(key)
    return None if data is None else pl.read_parquet(io.BytesIO(data))


def read_output(store: Store, key: str, producer: str) -> pl.DataFrame:
    """Read an output a later stage depends on; say which command builds it when it is missing
    (or that the data directory itself is not there)."""
    frame = find_output(store, key)
    if frame is None:
        store.require()
        raise StageInputMissingError(
            f"{store.where(key)} does not exist yet: run `pipeline {producer}` first"
        )
    return frame


def write_output(
    store: Store,
    frame: pl.DataFrame,
    key: str,
    sort_by: Sequence[str],
    lock: LockOptions = DEFAULT_LOCK,
) -> str:
    """Make `frame` the one output at `key` (the other files of its folder stay); return where."""

    def build() -> tuple[None, list[tuple[str, Writer]]]:
        return None, [(key, parquet_writer(frame, sort_by))]

    store.write_outputs(key.rsplit("/", 1)[0], build, lock)
    return store.where(key)
