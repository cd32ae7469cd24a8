"""Where exported partitions go: a folder of Hive-partitioned Parquet files, or a Delta table.

Each sink knows which source key every partition it holds was built from (`exported`), writes
one partition whole (`write`) and takes one away (`remove`). Neither ever shows a reader half a
partition:

* Parquet: `<table>/date=D/part-0.parquet`, staged whole under the export root's `.staging/`,
  fsynced and renamed into place (a reader sees the old file or the new one); then the table's
  state file (`.export-state/<table>.json`, the source key of each day) is replaced the same
  way. The state is never ahead of the files: a kill between the two leaves a day whose key is
  old, written again next time. Every operation is relative to the export root without
  following a link below it.
* Delta: one commit per partition (`deltalake`: an overwrite of that `date`, or a delete); the
  map of every partition's source key rides in the commit's own metadata, so a commit that did
  not happen records nothing. Files of a commit a kill interrupted are never referenced by the
  log, so no Delta reader sees them (`DeltaTable.vacuum()` removes them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError, StoreError, SymlinkRefusedError
from pipeline.store.fsutil import dir_entries, kind_of, open_file, remove_dir, unlink_below
from pipeline.store.outputs import PARQUET_OPTIONS, ROW_GROUP_SIZE
from pipeline.store.staging import replace_atomic, staged_file
from stages.export.transform import partition_day

__all__ = ["KEY", "PART_NAME", "STATE_DIR", "DeltaSink", "ParquetSink", "Sink"]

KEY = "pipeline.export.source"
"""Where a Delta commit records the source key of every partition."""
STATE_DIR = ".export-state"
"""Beside the Parquet tables, never in one: polars reads every file of a table's folder, and
Parquet files whose bytes depend on the events only can say nothing about their sources."""
PART_NAME = "part-0.parquet"
_DATE = "date="


class Sink(Protocol):
    def exported(self) -> dict[str, str]:
        """Every partition held: day → the source key it was built from ("" if unknown)."""
        ...

    def write(self, day: str, rows: pa.Table, key: str) -> None: ...

    def remove(self, day: str) -> None: ...


def _foreign(path: Path, what: str) -> InputError:
    return InputError(
        f"{path}: {what}; `pipeline export` writes only what it made there: "
        "choose another --out, or remove it"
    )


class ParquetSink:
    """`base/date=D/part-0.parquet` for each day, below `root` (the data dir, or --out), and
    beside the tables `.export-state/<table>.json`: which source key each day was built from."""

    def __init__(self, root: Path, base: Path, staging: Path) -> None:
        self.root, self.base, self.staging = root, base, staging
        self.state_path = base.parent / STATE_DIR / f"{base.name}.json"
        self._state: dict[str, str] | None = None

    def _file(self, day: str) -> Path:
        return self.base / f"{_DATE}{day}" / PART_NAME

    def exported(self) -> dict[str, str]:
        """The days whose file is there, each with the key the state records ("" if none: a
        file written just before a kill, before the state said so, is written again)."""
        state = self._read_state()
        return {day: state.get(day, "") if whole else "" for day, whole in self._days()}

    def _days(self) -> list[tuple[str, bool]]:
        """Every day's folder, and whether its file is there."""
        try:
            entries = dir_entries(self.root, self.base)
        except FileNotFoundError:
            return []
        days = []
        for name, kind in entries:
            path = self.base / name
            if kind == "link":
                raise SymlinkRefusedError(path)
            if kind != "dir" or not name.startswith(_DATE):
                raise _foreign(path, "not a date=YYYY-MM-DD partition")
            day = name.removeprefix(_DATE)
            partition_day(str(path), day)
            inside = dir_entries(self.root, path)
            extra = [n for n, _ in inside if n != PART_NAME]
            if extra:
                raise _foreign(path / extra[0], "not written by `pipeline export`")
            if inside and inside[0][1] == "link":
                raise SymlinkRefusedError(path / PART_NAME)
            days.append((day, bool(inside)))  # empty: a kill between unlink and rmdir
        return days

    def _read_state(self) -> dict[str, str]:
        if self._state is None:
            self._state = {}
            try:
                fd = open_file(self.root, self.state_path, os.O_RDONLY)
            except FileNotFoundError:
                return {}
            with os.fdopen(fd, "rb") as handle:
                try:
                    found = json.loads(handle.read(1 << 24))
                except ValueError:
                    found = None  # unreadable: every day is written again
            if isinstance(found, dict):
                self._state = {str(k): str(v) for k, v in found.items()}
        return self._state

    def _write_state(self, state: dict[str, str]) -> None:
        text = json.dumps(state, sort_keys=True, indent=0).encode()
        with staged_file(self.root, self.staging, lambda h: h.write(text)) as tmp:
            replace_atomic(tmp, self.state_path)
        self._state = state

    def write(self, day: str, rows: pa.Table, key: str) -> None:
        def write(handle: BinaryIO) -> None:
            pq.write_table(rows, handle, row_group_size=ROW_GROUP_SIZE, **PARQUET_OPTIONS)

        with staged_file(self.root, self.staging, write) as tmp:
            replace_atomic(tmp, self._file(day))
        self._write_state({**self._read_state(), day: key})  # after the file: never ahead

    def remove(self, day: str) -> None:
        path = self._file(day)
        unlink_below(self.root, path)
        remove_dir(self.root, path.parent)
        self._write_state({d: k for d, k in self._read_state().items() if d != day})


class DeltaSink:
    """A Delta table at `path` partitioned by `date` (a date column added to every row)."""

    def __init__(self, root: Path, path: Path) -> None:
        try:
            import deltalake
            import deltalake.exceptions
        except ImportError:
            raise InputError(
                "--format delta needs the deltalake package: "
                "pip install 'llm-bench-pipeline[delta]'"
            ) from None
        self._deltalake = deltalake
        self.root, self.path = root, path
        self._held: dict[str, str] | None = None

    def _table(self) -> Any:
        # deltalake opens paths itself (following links), so the way there is checked first.
        kind = kind_of(self.root, self.path)
        if kind == "link":
            raise SymlinkRefusedError(self.path)
        if kind is None:
            return None
        if kind != "dir":
            raise _foreign(self.path, "not a folder")
        log = self.path / "_delta_log"
        if kind_of(self.root, log) == "link":
            raise SymlinkRefusedError(log)
        if not self._deltalake.DeltaTable.is_deltatable(str(self.path)):
            if dir_entries(self.root, self.path):
                raise _foreign(self.path, "not a Delta table")
            return None
        try:
            return self._deltalake.DeltaTable(str(self.path))
        except (OSError, self._deltalake.exceptions.DeltaError) as exc:
            raise _delta_error(self.path, exc) from exc

    def exported(self) -> dict[str, str]:
        if self._held is None:
            self._held = self._read_held()
        return dict(self._held)

    def _read_held(self) -> dict[str, str]:
        table = self._table()
        if table is None:
            return {}
        try:
            history = table.history()
        except (OSError, self._deltalake.exceptions.DeltaError) as exc:
            raise _delta_error(self.path, exc) from exc
        for commit in history:  # newest first
            if KEY in commit:
                try:
                    held = json.loads(commit[KEY])
                except ValueError:
                    break
                if isinstance(held, dict):
                    return {str(k): str(v) for k, v in held.items()}
                break
        raise _foreign(self.path, "a Delta table `pipeline export` did not write")

    def _commit(self, held: dict[str, str]) -> Any:
        return self._deltalake.CommitProperties(custom_metadata={KEY: json.dumps(held)})

    def write(self, day: str, rows: pa.Table, key: str) -> None:
        held = self.exported()
        held[day] = key
        dates = pa.array([partition_day(str(self.path), day)] * rows.num_rows, pa.date32())
        rows = rows.append_column(pa.field("date", pa.date32(), nullable=False), dates)
        try:
            self._deltalake.write_deltalake(
                str(self.path),
                rows,
                partition_by=["date"],
                mode="overwrite",
                predicate=f"date = '{day}'",  # a checked YYYY-MM-DD: nothing to escape
                # Additive, as the event log's own schema evolution: a version whose table has a
                # new column adds it to the Delta schema (older days read it as null).
                schema_mode="merge",
                writer_properties=self._deltalake.WriterProperties(
                    compression="ZSTD", compression_level=3
                ),
                commit_properties=self._commit(held),
            )
        except (OSError, self._deltalake.exceptions.DeltaError) as exc:
            raise _delta_error(self.path, exc) from exc
        self._held = held

    def remove(self, day: str) -> None:
        held = self.exported()
        held.pop(day, None)
        table = self._table()
        if table is not None:
            try:
                table.delete(f"date = '{day}'", commit_properties=self._commit(held))
            except (OSError, self._deltalake.exceptions.DeltaError) as exc:
                raise _delta_error(self.path, exc) from exc
        self._held = held


def _delta_error(path: Path, exc: Exception) -> StoreError:
    """deltalake's errors (a full disk, a damaged log) as the one line every store error is."""
    return StoreError(
        f"{path}: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
    )
