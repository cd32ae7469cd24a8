"""The one writer of Parquet outputs: sorted rows, plain types, fixed settings, atomic replace.

The same frame always gives the same bytes: rows are sorted by the given keys, polars-only types
(Categorical, Enum) become strings, the compression and row-group size are fixed, and nothing from
the clock goes into the file.

A stage's outputs are written together (`replace_outputs`): every file is staged (written whole
and fsynced) before any is replaced, so a write that fails (a full disk) replaces none of them
and leaves no temp file behind; the stage's previous outputs stay as they were, consistent.
Outputs live at `DATA/<folder>/<file>`; neither the folder nor the file is read or written
through a symbolic link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageInputMissingError, SymlinkRefusedError
from pipeline.store.layout import Layout, require_data_dir
from pipeline.store.staging import Staged, replace_atomic, stage

__all__ = [
    "PARQUET_OPTIONS",
    "ROW_GROUP_SIZE",
    "Writer",
    "output_present",
    "parquet_writer",
    "plain_arrow",
    "read_output",
    "replace_outputs",
    "write_output",
]

ROW_GROUP_SIZE = 128 * 1024
PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "write_statistics": True,
    "use_dictionary": True,
}
"""Every Parquet file the pipeline writes (outputs and `pipeline export`) uses these settings
(and ROW_GROUP_SIZE), so the same rows give the same bytes."""
Writer = Callable[[BinaryIO], object]


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
    the conversion run when it is called (in `replace_outputs`' threads, beside the other file)."""

    def write(handle: BinaryIO) -> None:
        rows = frame.sort(list(sort_by), nulls_last=True, maintain_order=True) if sort_by else frame
        pq.write_table(plain_arrow(rows), handle, row_group_size=ROW_GROUP_SIZE, **PARQUET_OPTIONS)

    return write


def replace_outputs(root: Path, outputs: Sequence[tuple[Path, Writer]]) -> list[Path]:
    """Stage every output under `root/.staging` (at once, in threads: writing and fsync release
    the GIL), then replace each path atomically. A failure while staging replaces nothing."""
    staging = Layout(root).staging
    staged: list[Staged] = []
    try:
        if len(outputs) == 1:
            staged.append(stage(root, staging, outputs[0][1]))
        else:
            with ThreadPoolExecutor(len(outputs)) as pool:
                futures = [pool.submit(stage, root, staging, write) for _, write in outputs]
            failures = []
            for future in futures:  # all done: keep what was staged, so it is removed below
                try:
                    staged.append(future.result())
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                    failures.append(exc)
            if failures:
                raise failures[0]
        for (path, _), tmp in zip(outputs, staged, strict=True):
            replace_atomic(tmp, path)
    finally:
        for tmp in staged:
            tmp.close()
    return [path for path, _ in outputs]


def write_output(frame: pl.DataFrame, path: Path, sort_by: Sequence[str], root: Path) -> Path:
    """Sort, write to `root/.staging` with fixed settings, fsync, then atomically replace `path`."""
    replace_outputs(root, [(path, parquet_writer(frame, sort_by))])
    return path


def output_present(path: Path) -> bool:
    """Whether the output file exists; a link in its place (or for its folder) is refused."""
    for each in (path.parent, path):
        if each.is_symlink():
            raise SymlinkRefusedError(each)
    return path.is_file()


def read_output(path: Path, producer: str) -> pl.DataFrame:
    """Read an output a later stage depends on; say which command builds it when it is missing
    (or that the data directory itself is not there: outputs live in DATA/<folder>/<file>)."""
    if not output_present(path):
        require_data_dir(path.parent.parent)
        raise StageInputMissingError(f"{path} does not exist yet: run `pipeline {producer}` first")
    return pl.read_parquet(path)
