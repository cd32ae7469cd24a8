"""The append-only event log: partitioned Arrow IPC files under `DATA/events/<table>/date=D/`.

Writers publish whole files only (staging → fsync → link); a published file is never modified.
Readers list `*.arrow` only, check each file's footer, and scan them with the table's explicit
schema, so an older file without a newer column reads as null (or the column's default).

Compaction leaves a merged file whose metadata lists the files it replaces; readers skip those,
so the set of events is the same at every instant of a compaction. Two rules keep that list from
ever hiding a file published after it:

* File names never repeat within a run: each `EventWriter` draws a random incarnation token
  (`w0` → `w0.1f2e3d4c`), so a writer that starts again under the same run and writer name (a
  restarted process, the next pair's worker processes, a one-shot append) never produces a name
  seen before, not even one a compaction merged and deleted.
* The list records each replaced file's size and blake2b digest, and a file is skipped (or
  deleted by `compact` as a leftover) only when it matches byte for byte. Compacted files written
  before this rule list names only and are read exactly as before; the name list is still
  written beside the digests, so older versions read new files as they always did.

Nothing below the data directory is reached through a symbolic link (`pipeline.store.fsutil`): a
linked partition, table folder or `*.arrow` file stops a replay with SymlinkRefusedError naming
it, rather than being read, moved or deleted through.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import (
    CorruptEventFileError,
    InputError,
    InvalidNameError,
    SymlinkRefusedError,
)
from pipeline.store.evolution import ReadPlan, fill_value, polars_schema
from pipeline.store.fsutil import dir_entries, rename_below
from pipeline.store.layout import Layout
from pipeline.store.staging import publish_new, staged_file, sweep_staging
from schemas import TABLES, TableSpec, check_safe_name

__all__ = [
    "COMPACTED_PREFIX",
    "LEGACY_COMPACTED_PREFIX",
    "REPLACED_KEY",
    "REPLACES_KEY",
    "Replay",
    "conform",
    "EventFile",
    "EventLog",
    "EventWriter",
    "Fingerprint",
    "compacted_name",
    "is_compacted_name",
    "read_event_file",
    "read_file_table",
    "replaces_metadata",
    "write_ipc",
]

REPLACES_KEY = b"pipeline.replaces"
"""A compacted file's metadata: the names of the files it replaces (a JSON list of strings)."""
REPLACED_KEY = b"pipeline.replaced"
"""The same files with their size and digest (a JSON list of {name, size, blake2b}); when it is
there, a file is replaced only if it matches."""
COMPACTED_PREFIX = "compacted"
"""A merged file is `compacted-<digest>.arrow`. Not `_compacted`, as before: pyarrow's datasets,
Spark and Hadoop hide names that start with `_` or `.`, so a compacted partition read as zero
rows there. A run id may start with "compacted" too, so a merged file is known by its whole
name (`_COMPACTED`: no writer's file name is a bare hex digest after one dash)."""
LEGACY_COMPACTED_PREFIX = "_compacted"
"""What merged files were named before: still read, skipped when replaced and compacted again (no
run id starts with `_`, so the prefix alone tells)."""
_COMPACTED = re.compile(rf"^{COMPACTED_PREFIX}-[0-9a-f]+\.arrow$")
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_FILE = re.compile(r"^(?P<run>.+)-(?P<writer>[A-Za-z0-9_.]+)-(?P<seq>\d+)\.arrow$")
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
"""LZ4 frames, not zstd: every replay decompresses the events, and lz4 does it ~2.8x faster for
~1.8x the bytes (10M request events: 1.7 GB vs 0.9 GB; docs/aggregate.md). Files written with
zstd by earlier versions read the same (the codec is recorded per file)."""


@dataclass(frozen=True)
class EventFile:
    """A published event file and what its path says about it."""

    path: Path
    table: str
    date: str
    run_id: str | None
    """None for a compacted file (it holds many runs)."""

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Fingerprint:
    """A file's size and content digest: what a compacted file remembers of each file it merged."""

    size: int
    blake2b: str

    @classmethod
    def of(cls, data: bytes) -> Fingerprint:
        return cls(len(data), hashlib.blake2b(data, digest_size=16).hexdigest())


def replaces_metadata(replaced: Sequence[tuple[str, Fingerprint]]) -> dict[bytes, bytes]:
    """The metadata of a compacted file replacing these files (both keys: see REPLACED_KEY)."""
    entries = [{"name": n, "size": f.size, "blake2b": f.blake2b} for n, f in sorted(replaced)]
    return {
        REPLACES_KEY: json.dumps([e["name"] for e in entries]).encode(),
        REPLACED_KEY: json.dumps(entries).encode(),
    }


def write_ipc(
    table: pa.Table, handle: BinaryIO, metadata: Mapping[bytes, bytes] | None = None
) -> None:
    schema = table.schema
    if metadata:
        schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
    with pa.ipc.new_file(handle, schema, options=IPC_OPTIONS) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))


def read_event_file(path: Path) -> tuple[pa.Table, Fingerprint]:
    """Read and fully validate one event file (never through a link), with its fingerprint;
    raise CorruptEventFileError naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptEventFileError([path], str(exc).splitlines()[0][:200]) from exc
    return table, Fingerprint.of(data)


def read_file_table(path: Path) -> pa.Table:
    """Read and fully validate one event file; raise CorruptEventFileError naming it."""
    return read_event_file(path)[0]


def _matches(path: Path, prints: Sequence[Fingerprint | None]) -> bool:
    """Whether the file at `path` is one of `prints` (None: listed by name only, an older
    compacted file: any content matches)."""
    if any(p is None for p in prints):
        return True
    try:
        size = path.lstat().st_size
        if not any(p is not None and p.size == size for p in prints):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            digest = hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16))
    except OSError as exc:
        raise CorruptEventFileError([path], str(exc)) from exc
    return Fingerprint(size, digest.hexdigest()) in prints


def is_compacted_name(name: str) -> bool:
    """Whether `name` is a merged file's (this version's name or the one before it)."""
    return name.startswith(LEGACY_COMPACTED_PREFIX) or _COMPACTED.match(name) is not None


def compacted_name(digest: str) -> str:
    """The name of the merged file whose inputs hash to `digest` (hex)."""
    return f"{COMPACTED_PREFIX}-{digest}.arrow"


def _footer_schema(path: Path) -> pa.Schema:
    try:
        with pa.OSFile(str(path)) as source:
            return pa.ipc.open_file(source).schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptEventFileError([path], str(exc).splitlines()[0][:200]) from exc


def _spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise InputError(f"unknown event table {table!r}; tables: {', '.join(TABLES)}") from None


def conform(
    spec: TableSpec, batch: pa.Table | pa.RecordBatch | Mapping[str, Sequence[Any]]
) -> pa.Table:
    """Give a batch exactly the table's schema (column order and types); refuse what does not fit."""
    try:
        if isinstance(batch, Mapping):
            types = {f.name: f.type for f in spec.schema}
            unknown = [k for k in batch if k not in types]
            if unknown:
                raise KeyError(f"unknown column(s): {', '.join(unknown)}")
            batch = pa.table({k: pa.array(v, type=types[k]) for k, v in batch.items()})
        elif isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        columns = []
        for field in spec.schema:
            if field.name in batch.column_names:
                columns.append(batch.column(field.name).cast(field.type))
            elif field.nullable:
                columns.append(pa.chunked_array([pa.nulls(batch.num_rows, field.type)]))
            elif (fill := fill_value(spec, field.name)) is not None:
                # A column added later with a default: a writer that predates it still fits.
                columns.append(pa.chunked_array([pa.array([fill] * batch.num_rows, field.type)]))
            else:
                raise KeyError(f"required column {field.name!r} is missing")
        table = pa.Table.from_arrays(columns, schema=spec.schema)
        for field in spec.schema:
            if not field.nullable and table.column(field.name).null_count:
                raise ValueError(f"column {field.name!r} must not hold nulls")
        table.validate(full=True)
        return table
    except (pa.ArrowException, TypeError, ValueError, KeyError) as exc:
        raise InputError(f"batch for table {spec.name!r} does not match its schema: {exc}") from exc


class EventWriter:
    """Appends batches for one run from one writer instance.

    File names are `<run>-<writer>.<token>-<seq>.arrow`: `token` is 8 random hex digits drawn
    for this instance and `seq` counts its files (across tables and days), so no two instances
    ever produce the same name, whatever restarts (module docstring). Its first append sweeps
    `DATA/.staging` of temp files a killed writer left behind.
    """

    def __init__(self, log: EventLog, run_id: str, writer: str = "w0") -> None:
        for label, value in (("run_id", run_id), ("writer", writer)):
            try:
                check_safe_name(value)
            except ValueError as exc:
                raise InvalidNameError(f"{label}: {exc}") from None
        if not re.fullmatch(r"[A-Za-z0-9_.]+", writer):
            raise InvalidNameError(f"writer: {writer!r} may hold only A-Z a-z 0-9 _ .")
        self.log = log
        self.run_id = run_id
        self.writer = writer
        self.name = f"{writer}.{secrets.token_hex(4)}"
        """What goes into the file names: the writer and this instance's token."""
        self.seq = 0
        self._swept = False

    def append(
        self, table: str, batch: pa.Table | pa.RecordBatch | Mapping[str, Sequence[Any]]
    ) -> list[Path]:
        """Publish the batch as one file per date partition it touches; return the new paths."""
        spec = _spec(table)
        data = conform(spec, batch)
        if data.num_rows == 0:
            return []
        if not self._swept:
            sweep_staging(self.log.data_dir)
            self._swept = True
        dates = pc.strftime(data.column(spec.time_column), format="%Y-%m-%d")
        days = sorted(set(dates.to_pylist()))
        published = []
        for day in days:
            part = data.filter(pc.equal(dates, day)) if len(days) > 1 else data

            def write(handle: BinaryIO, part: pa.Table = part) -> None:
                write_ipc(part, handle)

            directory = self.log.partition_dir(table, day)
            with staged_file(self.log.data_dir, self.log.staging, write) as tmp:
                while True:  # a taken name (never, short of a token collision) takes the next
                    final = directory / f"{self.run_id}-{self.name}-{self.seq:06d}.arrow"
                    self.seq += 1
                    if publish_new(tmp, final):
                        break
            published.append(final)
        return published


class EventLog:
    """The event store rooted at a data directory."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.layout = Layout(self.data_dir)

    @property
    def events_dir(self) -> Path:
        return self.layout.events

    @property
    def staging(self) -> Path:
        return self.layout.staging

    def table_dir(self, table: str) -> Path:
        return self.layout.table(_spec(table).name)

    def partition_dir(self, table: str, day: str) -> Path:
        return self.layout.partition(_spec(table).name, day)

    def writer(self, run_id: str, writer: str = "w0") -> EventWriter:
        return EventWriter(self, run_id, writer)

    def append(
        self,
        table: str,
        batch: pa.Table | Mapping[str, Sequence[Any]],
        *,
        run_id: str,
        writer: str = "w0",
    ) -> list[Path]:
        """One-shot append (a new writer instance each call, so a new token: no name is ever
        reused; use `writer()` for a stream of batches)."""
        return self.writer(run_id, writer).append(table, batch)

    # -- reading -----------------------------------------------------------------------------

    def partitions(self, table: str) -> list[str]:
        """The dates of the table's partitions; a linked one raises SymlinkRefusedError."""
        root = self.table_dir(table)
        try:
            entries = dir_entries(self.data_dir, root)
        except FileNotFoundError:
            return []
        days = []
        for name, kind in entries:
            if match := _PARTITION.match(name):
                if kind == "link":
                    raise SymlinkRefusedError(root / name)
                if kind == "dir":
                    days.append(match.group(1))
        return days

    def listing(self, table: str, day: str) -> tuple[list[EventFile], list[EventFile]]:
        """The files of one partition: (visible, replaced). Replaced are those a compacted file
        there lists and that still match what it merged (module docstring)."""
        directory = self.partition_dir(table, day)
        try:
            entries = dir_entries(self.data_dir, directory)
        except FileNotFoundError:
            return [], []
        found = []
        for name, kind in entries:
            if not name.endswith(".arrow"):
                continue
            if kind == "link":
                raise SymlinkRefusedError(directory / name)
            if kind != "file":
                continue
            if is_compacted_name(name):
                found.append(EventFile(directory / name, table, day, None))
            elif match := _FILE.match(name):
                found.append(EventFile(directory / name, table, day, match["run"]))
        listed: dict[str, list[Fingerprint | None]] = {}
        for item in found:
            if item.run_id is None:
                for name, fingerprint in self.replaced_by(item.path):
                    listed.setdefault(name, []).append(fingerprint)
        visible: list[EventFile] = []
        replaced: list[EventFile] = []
        for item in found:
            prints = listed.get(item.name)
            (replaced if prints and _matches(item.path, prints) else visible).append(item)
        return visible, replaced

    def files(
        self,
        table: str,
        *,
        since: date | None = None,
        until: date | None = None,
        run_ids: Iterable[str] | None = None,
    ) -> list[EventFile]:
        """Published files, oldest partition first; files replaced by a compaction are left out."""
        wanted = set(run_ids) if run_ids is not None else None
        out: list[EventFile] = []
        for day in self.partitions(table):
            if (since and day < since.isoformat()) or (until and day > until.isoformat()):
                continue
            for item in self.listing(table, day)[0]:
                if wanted is not None and item.run_id is not None and item.run_id not in wanted:
                    continue
                out.append(item)
        return out

    @staticmethod
    def replaced_by(path: Path) -> list[tuple[str, Fingerprint | None]]:
        """The files a compacted file replaces, with their fingerprints (None: names only)."""
        metadata = _footer_schema(path).metadata or {}
        try:
            if raw := metadata.get(REPLACED_KEY):
                return [
                    (e["name"], Fingerprint(int(e["size"]), str(e["blake2b"])))
                    for e in json.loads(raw)
                ]
            raw = metadata.get(REPLACES_KEY)
            return [(str(name), None) for name in json.loads(raw)] if raw else []
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptEventFileError(
                [path], f"unreadable list of replaced files: {exc}"
            ) from exc

    def check(
        self, files: Sequence[EventFile]
    ) -> tuple[list[tuple[EventFile, pa.Schema]], list[EventFile]]:
        """Open every footer: (readable files with their schemas, corrupt files)."""
        good, bad = [], []
        for item in files:
            try:
                good.append((item, _footer_schema(item.path)))
            except CorruptEventFileError:
                bad.append(item)
        return good, bad

    def quarantine(self, files: Iterable[EventFile]) -> list[Path]:
        """Move files aside to `DATA/quarantine/events/<table>/date=D/` (never deleted)."""
        moved = []
        for item in files:
            dest = self.layout.quarantined(item.table, item.date, item.name)
            rename_below(self.data_dir, item.path, dest)
            moved.append(dest)
        return moved

    def replay(
        self,
        table: str,
        *,
        since: date | None = None,
        until: date | None = None,
        run_ids: Iterable[str] | None = None,
        skip_corrupt: bool = False,
    ) -> Replay:
        """A LazyFrame over the published events of `table`, with the table's explicit schema."""
        spec = _spec(table)
        run_list = list(run_ids) if run_ids is not None else None
        files = self.files(table, since=since, until=until, run_ids=run_list)
        good, bad = self.check(files)
        quarantined: list[Path] = []
        if bad:
            if not skip_corrupt:
                raise CorruptEventFileError([b.path for b in bad], "unreadable footer")
            quarantined = self.quarantine(bad)
        frame = _scan(spec, good)
        if run_list is not None and any(item.run_id is None for item, _ in good):
            frame = frame.filter(pl.col("run_id").is_in(run_list))
        return Replay(frame, [item for item, _ in good], quarantined, spec, good, run_list)


@dataclass(frozen=True)
class Replay:
    """What `EventLog.replay` found: the frame, the files behind it, and what was quarantined."""

    frame: pl.LazyFrame
    files: list[EventFile]
    quarantined: list[Path]
    spec: TableSpec
    schemas: Sequence[tuple[EventFile, pa.Schema]]
    run_ids: Sequence[str] | None

    def batch_sources(self, columns: Sequence[str]) -> list[Callable[[], Iterator[pa.RecordBatch]]]:
        """The same events as `frame`, as one lazy reader per file of Arrow record batches with
        exactly `columns` (the table's types; a column an older file lacks reads as its default
        or null). Read with pyarrow, only those columns, so the files can be read in parallel and
        nothing is converted. A file corrupt past its footer fails naming it."""
        plans: dict[tuple[str, ...], ReadPlan] = {}
        sources: list[Callable[[], Iterator[pa.RecordBatch]]] = []
        for item, schema in self.schemas:
            names = tuple(schema.names)
            plan = plans.get(names)
            if plan is None:
                plan = plans[names] = ReadPlan.of(self.spec, schema, columns)
            runs = self.run_ids if item.run_id is None else None
            sources.append(partial(_read_batches, plan, item, runs))
        return sources

    def collect(self, **kwargs: Any) -> pl.DataFrame:
        """Collect; if a file turns out corrupt past its footer, fail naming it."""
        try:
            frame: pl.DataFrame = self.frame.collect(**kwargs)
            return frame
        except (pl.exceptions.PolarsError, OSError) as exc:
            for item in self.files:
                read_file_table(item.path)  # raises CorruptEventFileError naming the file
            raise exc


def _read_batches(
    plan: ReadPlan, item: EventFile, run_ids: Sequence[str] | None
) -> Iterator[pa.RecordBatch]:
    """One file's record batches with exactly the plan's columns, typed as the table (see
    `batch_sources`); only the rows of `run_ids` when given (a compacted file holds many runs)."""
    wanted = pa.array(list(run_ids), pa.string()) if run_ids is not None else None
    schema = plan.batch_schema()
    try:
        # Read, not memory-mapped: mapping and unmapping serialise threads on the process's
        # address space, which shows with many small files (measured: same speed on big ones).
        with pa.OSFile(str(item.path)) as source:
            reader = pa.ipc.open_file(source, options=plan.options)
            for index in range(reader.num_record_batches):
                out = plan.batch(reader.get_batch(index), schema)
                if wanted is not None:
                    out = out.filter(pc.is_in(out.column("run_id"), value_set=wanted))
                yield out
    except (pa.ArrowException, OSError) as exc:
        raise CorruptEventFileError([item.path], str(exc).splitlines()[0][:200]) from exc


def _scan(spec: TableSpec, files: Sequence[tuple[EventFile, pa.Schema]]) -> pl.LazyFrame:
    target = polars_schema(spec)
    if not files:
        return pl.LazyFrame(schema=target)
    # One scan per distinct column list (files written by the same schema version), read by its
    # plan: the current files as they are, older ones with the columns they lack filled in.
    by_names: dict[tuple[str, ...], tuple[pa.Schema, list[str]]] = {}
    for item, schema in files:
        by_names.setdefault(tuple(schema.names), (schema, []))[1].append(str(item.path))
    frames = [
        ReadPlan.of(spec, schema).frame(pl.scan_ipc(paths, glob=False), target)
        for schema, paths in by_names.values()
    ]
    frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
    return frame.cast(dict(target))  # type: ignore[arg-type]
