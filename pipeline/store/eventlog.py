"""The append-only event log: partitioned Arrow IPC files under `DATA/events/<table>/date=D/`.

Writers publish whole files only (locally staging → fsync → link; on an object store one
create-only PUT: `pipeline.store.backend`); a published file is never modified.
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

import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from pipeline.store.backend import Store
from pipeline.store.evolution import ReadPlan, fill_value, polars_schema
from pipeline.store.layout import Layout, partition_key, quarantine_key, table_key
from pipeline.store.local import LocalStore
from pipeline.store.location import Location, open_store
from pipeline.store.pointer import Fingerprint
from schemas import TABLES, TableSpec, check_safe_name

__all__ = [
    "REPLACED_KEY",
    "REPLACES_KEY",
    "Replay",
    "conform",
    "EventFile",
    "EventLog",
    "EventWriter",
    "Fingerprint",
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
COMPACTED_PREFIX = "_compacted"
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_FILE = re.compile(r"^(?P<run>.+)-(?P<writer>[A-Za-z0-9_.]+)-(?P<seq>\d+)\.arrow$")
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
"""LZ4 frames, not zstd: every replay decompresses the events, and lz4 does it ~2.8x faster for
~1.8x the bytes (10M request events: 1.7 GB vs 0.9 GB; docs/aggregate.md). Files written with
zstd by earlier versions read the same (the codec is recorded per file)."""


@dataclass(frozen=True)
class EventFile:
    """A published event file and what its key says about it."""

    key: str
    """Its key in the store (`events/<table>/date=D/<name>`)."""
    where: str
    """How messages name it: a local path or an object's URL."""
    table: str
    date: str
    run_id: str | None
    """None for a compacted file (it holds many runs)."""

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        """The file's path, for a local data directory (tests and benches look at files)."""
        return Path(self.where)


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


def _reason(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def read_event_file(store: Store, item: EventFile) -> tuple[pa.Table, Fingerprint]:
    """Read and fully validate one event file (never through a link), with its fingerprint;
    raise CorruptEventFileError naming it."""
    data = store.read(item.key)
    try:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptEventFileError([item.where], _reason(exc)) from exc
    return table, Fingerprint.of(data)


def read_file_table(store: Store, item: EventFile) -> pa.Table:
    """Read and fully validate one event file; raise CorruptEventFileError naming it."""
    return read_event_file(store, item)[0]


def _matches(store: Store, item: EventFile, prints: Sequence[Fingerprint | None]) -> bool:
    """Whether the file is one of `prints` (None: listed by name only, an older compacted
    file: any content matches). Only leftovers of an interrupted compaction get here."""
    if any(p is None for p in prints):
        return True
    return Fingerprint.of(store.read(item.key)) in prints


def _footer_schema(store: Store, item: EventFile) -> pa.Schema:
    try:
        with store.open_footer(item.key) as source:
            return pa.ipc.open_file(source).schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptEventFileError([item.where], _reason(exc)) from exc


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

    def _names(self, table: str, day: str) -> Iterator[str]:
        """The keys this writer may publish at next, in order (each used up once tried)."""
        while True:
            self.seq += 1
            yield f"{partition_key(table, day)}/{self.run_id}-{self.name}-{self.seq - 1:06d}.arrow"

    def append(
        self, table: str, batch: pa.Table | pa.RecordBatch | Mapping[str, Sequence[Any]]
    ) -> list[str]:
        """Publish the batch as one file per date partition it touches; return where each is."""
        spec = _spec(table)
        data = conform(spec, batch)
        if data.num_rows == 0:
            return []
        store = self.log.store
        if not self._swept:
            store.sweep()
            self._swept = True
        dates = pc.strftime(data.column(spec.time_column), format="%Y-%m-%d")
        days = sorted(set(dates.to_pylist()))
        published = []
        for day in days:
            part = data.filter(pc.equal(dates, day)) if len(days) > 1 else data

            def write(handle: BinaryIO, part: pa.Table = part) -> None:
                write_ipc(part, handle)

            # A taken name (never, short of a token collision) takes the next.
            key = store.create(write, self._names(spec.name, day))
            assert key is not None  # the names never run out
            published.append(store.where(key))
        return published


class EventLog:
    """The event store of a data directory: a local folder or an object-store URL."""

    def __init__(self, where: Location) -> None:
        self.store = open_store(where)

    @property
    def events_dir(self) -> str:
        """The event log's folder as messages name it."""
        return self.store.where("events")

    @property
    def data_dir(self) -> Path:
        """The local data directory (only a local store has one)."""
        if not isinstance(self.store, LocalStore):
            raise TypeError(f"{self.store.location} is not a local folder")
        return self.store.root

    def partition_dir(self, table: str, day: str) -> Path:
        """A partition's folder in a local data directory."""
        return Layout(self.data_dir).partition(_spec(table).name, day)

    def writer(self, run_id: str, writer: str = "w0") -> EventWriter:
        return EventWriter(self, run_id, writer)

    def append(
        self,
        table: str,
        batch: pa.Table | Mapping[str, Sequence[Any]],
        *,
        run_id: str,
        writer: str = "w0",
    ) -> list[str]:
        """One-shot append (a new writer instance each call, so a new token: no name is ever
        reused; use `writer()` for a stream of batches)."""
        return self.writer(run_id, writer).append(table, batch)

    # -- reading -----------------------------------------------------------------------------

    def partitions(self, table: str) -> list[str]:
        """The dates of the table's partitions; a linked one raises SymlinkRefusedError."""
        root = table_key(_spec(table).name)
        days = []
        for name, kind in self.store.entries(root):
            if match := _PARTITION.match(name):
                if kind == "link":
                    raise SymlinkRefusedError(Path(self.store.where(f"{root}/{name}")))
                if kind == "dir":
                    days.append(match.group(1))
        return days

    def listing(self, table: str, day: str) -> tuple[list[EventFile], list[EventFile]]:
        """The files of one partition: (visible, replaced). Replaced are those a compacted file
        there lists and that still match what it merged (module docstring)."""
        directory = partition_key(_spec(table).name, day)
        found = []
        for name, kind in self.store.entries(directory):
            if not name.endswith(".arrow"):
                continue
            key = f"{directory}/{name}"
            if kind == "link":
                raise SymlinkRefusedError(Path(self.store.where(key)))
            if kind != "file":
                continue
            if name.startswith(COMPACTED_PREFIX):
                found.append(EventFile(key, self.store.where(key), table, day, None))
            elif match := _FILE.match(name):
                found.append(EventFile(key, self.store.where(key), table, day, match["run"]))
        listed: dict[str, list[Fingerprint | None]] = {}
        for item in found:
            if item.run_id is None:
                for name, fingerprint in self.replaced_by(item):
                    listed.setdefault(name, []).append(fingerprint)
        visible: list[EventFile] = []
        replaced: list[EventFile] = []
        for item in found:
            prints = listed.get(item.name)
            (replaced if prints and _matches(self.store, item, prints) else visible).append(item)
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

    def replaced_by(self, item: EventFile) -> list[tuple[str, Fingerprint | None]]:
        """The files a compacted file replaces, with their fingerprints (None: names only)."""
        metadata = _footer_schema(self.store, item).metadata or {}
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
                [item.where], f"unreadable list of replaced files: {exc}"
            ) from exc

    def check(
        self, files: Sequence[EventFile]
    ) -> tuple[list[tuple[EventFile, pa.Schema]], list[EventFile]]:
        """Open every footer: (readable files with their schemas, corrupt files)."""

        def footer(item: EventFile) -> pa.Schema | None:
            try:
                return _footer_schema(self.store, item)
            except CorruptEventFileError:
                return None

        threads = self.store.read_threads
        if threads > 1 and len(files) > 1:  # each footer a round trip: overlap them
            with ThreadPoolExecutor(min(threads, len(files))) as pool:
                schemas = list(pool.map(footer, files))
        else:
            schemas = [footer(item) for item in files]
        good = [(item, schema) for item, schema in zip(files, schemas, strict=True) if schema]
        bad = [item for item, schema in zip(files, schemas, strict=True) if schema is None]
        return good, bad

    def quarantine(self, files: Iterable[EventFile]) -> list[str]:
        """Move files aside to `DATA/quarantine/events/<table>/date=D/` (never deleted); return
        where each went."""
        moved = []
        for item in files:
            dest = quarantine_key(item.table, item.date, item.name)
            self.store.move(item.key, dest)
            moved.append(self.store.where(dest))
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
        quarantined: list[str] = []
        if bad:
            if not skip_corrupt:
                raise CorruptEventFileError([b.where for b in bad], "unreadable footer")
            quarantined = self.quarantine(bad)
        frame = _scan(self.store, spec, good)
        if run_list is not None and any(item.run_id is None for item, _ in good):
            frame = frame.filter(pl.col("run_id").is_in(run_list))
        return Replay(
            frame, [item for item, _ in good], quarantined, spec, good, run_list, self.store
        )


@dataclass(frozen=True)
class Replay:
    """What `EventLog.replay` found: the frame, the files behind it, and what was quarantined."""

    frame: pl.LazyFrame
    files: list[EventFile]
    quarantined: list[str]
    spec: TableSpec
    schemas: Sequence[tuple[EventFile, pa.Schema]]
    run_ids: Sequence[str] | None
    store: Store

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
            sources.append(partial(_read_batches, self.store, plan, item, runs))
        return sources

    def collect(self, **kwargs: Any) -> pl.DataFrame:
        """Collect; if a file turns out corrupt past its footer, fail naming it."""
        try:
            frame: pl.DataFrame = self.frame.collect(**kwargs)
            return frame
        except (pl.exceptions.PolarsError, OSError) as exc:
            for item in self.files:
                read_file_table(self.store, item)  # raises CorruptEventFileError naming it
            raise exc


def _read_batches(
    store: Store, plan: ReadPlan, item: EventFile, run_ids: Sequence[str] | None
) -> Iterator[pa.RecordBatch]:
    """One file's record batches with exactly the plan's columns, typed as the table (see
    `batch_sources`); only the rows of `run_ids` when given (a compacted file holds many runs)."""
    wanted = pa.array(list(run_ids), pa.string()) if run_ids is not None else None
    schema = plan.batch_schema()
    try:
        with store.open_whole(item.key) as source:
            reader = pa.ipc.open_file(source, options=plan.options)
            for index in range(reader.num_record_batches):
                out = plan.batch(reader.get_batch(index), schema)
                if wanted is not None:
                    out = out.filter(pc.is_in(out.column("run_id"), value_set=wanted))
                yield out
    except (pa.ArrowException, OSError) as exc:
        raise CorruptEventFileError([item.where], _reason(exc)) from exc


def _scan(
    store: Store, spec: TableSpec, files: Sequence[tuple[EventFile, pa.Schema]]
) -> pl.LazyFrame:
    target = polars_schema(spec)
    if not files:
        return pl.LazyFrame(schema=target)
    # One scan per distinct column list (files written by the same schema version), read by its
    # plan: the current files as they are, older ones with the columns they lack filled in.
    by_names: dict[tuple[str, ...], tuple[pa.Schema, list[str]]] = {}
    for item, schema in files:
        by_names.setdefault(tuple(schema.names), (schema, []))[1].append(item.key)
    frames = [
        ReadPlan.of(spec, schema).frame(store.scan_ipc(keys, schema), target)
        for schema, keys in by_names.values()
    ]
    frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
    return frame.cast(dict(target))  # type: ignore[arg-type]
