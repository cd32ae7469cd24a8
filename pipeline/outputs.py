"""The one writer of Parquet outputs: sorted rows, plain types, fixed settings, atomic replace.

The same frame always gives the same bytes: rows are sorted by the given keys, polars-only types
(Categorical, Enum) become strings, the compression and row-group size are fixed, and nothing from
the clock goes into the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageInputMissingError
from pipeline.fsutil import replace_atomic, staged_file

__all__ = ["ROW_GROUP_SIZE", "plain_arrow", "read_output", "write_output"]

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


def write_output(frame: pl.DataFrame, path: Path, sort_by: Sequence[str], staging: Path) -> Path:
    """Sort, write to staging with fixed settings, fsync, then atomically replace `path`."""
    if sort_by:
        frame = frame.sort(list(sort_by), nulls_last=True, maintain_order=True)
    table = plain_arrow(frame)

    def write(handle: BinaryIO) -> None:
        pq.write_table(
            table,
            handle,
            compression="zstd",
            compression_level=3,
            row_group_size=ROW_GROUP_SIZE,
            write_statistics=True,
            use_dictionary=True,
        )

    tmp = staged_file(staging, write)
    replace_atomic(tmp, path)
    return path


def read_output(path: Path, producer: str) -> pl.DataFrame:
    """Read an output a later stage depends on; say which command builds it when it is missing."""
    if not path.is_file():
        raise StageInputMissingError(f"{path} does not exist yet: run `pipeline {producer}` first")
    return pl.read_parquet(path)
