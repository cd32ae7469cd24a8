"""compact and archive keep the set of events, at every step, and name what they cannot read.

Every test runs against both backends (`store_dir`: a local folder and a local S3)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from pipeline.errors import CorruptEventFileError
from pipeline.store.eventlog import REPLACED_KEY, REPLACES_KEY, EventLog, conform, write_ipc
from pipeline.store.maintenance import archive, compact
from schemas import TABLES
from tests.conftest import StoreDir
from tests.writer_proc import batch

PARTITION = "events/requests/date=2026-01-02"


def ids(log: EventLog) -> list[str]:
    return sorted(log.replay("requests").collect()["event_id"].to_list())


def arrow_keys(where: StoreDir, day: str = "2026-01-02") -> list[str]:
    folder = f"events/requests/date={day}/"
    return [k for k in where.keys(folder) if k.endswith(".arrow") and "/" not in k[len(folder) :]]


def arrow_files(where: StoreDir, day: str = "2026-01-02") -> list[str]:
    return [k.rsplit("/", 1)[-1] for k in arrow_keys(where, day)]


def ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.py_buffer(data)).read_all()


@pytest.fixture
def log(store_dir: StoreDir) -> EventLog:
    log = EventLog(store_dir.location)
    for writer in ("w0", "w1"):
        out = log.writer("r1", writer)
        for number in range(3):
            out.append("requests", batch("r1", writer, number, 10))
    return log


def test_compact_merges_a_closed_partition_into_one_file_with_the_same_events(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    before = ids(log)
    (result,) = compact(log)
    assert (result.files_in, result.events, result.duplicates_dropped) == (6, 60, 0)
    assert ids(log) == before
    (name,) = arrow_files(where)
    assert name.startswith("_compacted-")
    assert compact(log) == []  # already compact


def test_compact_drops_duplicate_events(log: EventLog) -> None:
    log.writer("r1", "w9").append("requests", batch("r1", "w0", 0, 10))  # the same 10 events again
    assert len(log.replay("requests").collect()) == 70
    (result,) = compact(log)
    assert result.duplicates_dropped == 10
    assert len(ids(log)) == 60 == len(set(ids(log)))


def test_compact_leaves_todays_partition_alone(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    today = datetime.now(UTC)
    for number in range(2):
        rows = batch("r1", "w0", number, 3)
        rows["started_at"] = [today] * 3
        log.writer("r1", f"w{number}").append("requests", rows)
    assert compact(log) == []
    assert len(arrow_files(store_dir, today.strftime("%Y-%m-%d"))) == 2


def test_a_crash_after_publishing_and_before_deleting_loses_and_doubles_nothing(
    log: EventLog, store_dir: StoreDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = store_dir
    before = ids(log)
    real_delete = log.store.delete

    def dying_delete(keys: Sequence[str]) -> None:
        real_delete(keys[:2])
        raise KeyboardInterrupt("killed")  # stands for SIGKILL between two deletions

    monkeypatch.setattr(log.store, "delete", dying_delete)
    with pytest.raises(KeyboardInterrupt):
        compact(log)
    monkeypatch.undo()
    assert len(arrow_files(where)) == 1 + 4  # the merged file and 4 not yet deleted inputs
    assert ids(log) == before  # readers skip the inputs the merged file names
    compact(log)
    assert len(arrow_files(where)) == 1
    assert ids(log) == before


def test_a_crash_before_publishing_leaves_the_inputs_as_they_were(
    log: EventLog, store_dir: StoreDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = store_dir
    before, files = ids(log), arrow_files(where)

    def dying_create(*args: object) -> str | None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(log.store, "create", dying_create)
    with pytest.raises(KeyboardInterrupt):
        compact(log)
    assert arrow_files(where) == files and ids(log) == before


def test_compacting_twice_with_late_files_keeps_every_event(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    compact(log)
    log.writer("r2", "w0").append("requests", batch("r2", "w0", 0, 5))  # a late file for that day
    assert len(ids(log)) == 65
    compact(log)
    assert len(arrow_files(where)) == 1 and len(ids(log)) == 65


def test_compact_names_a_corrupt_file_and_quarantines_it_when_asked(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    (key,) = [k for k in arrow_keys(where) if re.search(r"/r1-w1\.[0-9a-f]+-000001\.arrow$", k)]
    name = key.rsplit("/", 1)[-1]
    where.write(key, where.read(key)[:100])
    with pytest.raises(CorruptEventFileError, match=re.escape(name)):
        compact(log)
    (result,) = compact(log, skip_corrupt=True)
    assert result.quarantined == 1 and result.events == 50
    assert where.keys(f"quarantine/{PARTITION}/") == [f"quarantine/{PARTITION}/{name}"]


def test_archive_moves_old_partitions_and_keeps_their_files(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    recent = batch("r3", "w0", 0, 4)
    recent["started_at"] = [datetime.now(UTC)] * 4
    log.writer("r3").append("requests", recent)
    results = archive(log, older_than_days=30)
    assert [(r.table, r.date, r.files) for r in results] == [("requests", "2026-01-02", 6)]
    assert len(ids(log)) == 4  # only the recent partition is replayed
    archived = where.keys(f"archive/{PARTITION}/")
    assert len(archived) == 6 and all(k.endswith(".arrow") for k in archived)
    assert sum(ipc(where.read(k)).num_rows for k in archived) == 60
    assert where.keys(PARTITION + "/") == []


def test_compact_before_a_given_day(log: EventLog) -> None:
    assert compact(log, before=date(2026, 1, 2)) == []
    assert len(compact(log, before=date(2026, 1, 3))) == 1


def test_batch_sources_of_a_compacted_file_keep_only_the_runs_asked_for(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    log.writer("r2").append("requests", batch("r2", "w0", 0, 7))
    compact(log)
    (name,) = arrow_files(where)
    assert name.startswith("_compacted-")  # one file holding both runs
    replay = log.replay("requests", run_ids=["r2"])
    tables = [pa.Table.from_batches(list(read())) for read in replay.batch_sources(["run_id"])]
    assert pa.concat_tables(tables).column("run_id").to_pylist() == ["r2"] * 7


def _write_event_file(where: StoreDir, key: str, rows: dict[str, list[object]]) -> None:
    """An event file put in place by hand (as a name collision, or an older version, would)."""
    handle = io.BytesIO()
    write_ipc(conform(TABLES["requests"], rows), handle)
    where.write(key, handle.getvalue())


def test_the_merged_file_lists_each_replaced_file_with_its_size_and_digest(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    inputs = {k.rsplit("/", 1)[-1]: where.read(k) for k in arrow_keys(where)}
    compact(log)
    (merged,) = arrow_keys(where)
    metadata = ipc(where.read(merged)).schema.metadata
    assert json.loads(metadata[REPLACES_KEY]) == sorted(inputs)  # what older versions read
    assert json.loads(metadata[REPLACED_KEY]) == [
        {
            "name": name,
            "size": len(data),
            "blake2b": hashlib.blake2b(data, digest_size=16).hexdigest(),
        }
        for name, data in sorted(inputs.items())
    ]


def test_a_later_file_under_a_listed_name_is_neither_hidden_nor_deleted(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    """Should a name ever come back (a token collision, a hand-made file), what a compacted file
    lists hides and deletes only the file it merged, byte for byte."""
    compact(log)
    (merged,) = arrow_keys(where)
    listed = json.loads(ipc(where.read(merged)).schema.metadata[REPLACES_KEY])[0]
    _write_event_file(where, f"{PARTITION}/{listed}", batch("r2", "w0", 0, 5))
    assert len(ids(log)) == 65
    compact(log)
    assert len(ids(log)) == 65 and len(arrow_files(where)) == 1


def test_an_older_compacted_file_hides_the_names_it_lists_as_before(
    log: EventLog, store_dir: StoreDir
) -> None:
    where = store_dir
    """A merged file from before the digests lists names only: those files are skipped (and
    deleted by the next compact) whatever their content, exactly as that version did."""
    inputs = arrow_keys(where)
    merged = pa.concat_tables([ipc(where.read(k)) for k in inputs])
    names = json.dumps([k.rsplit("/", 1)[-1] for k in inputs]).encode()
    handle = io.BytesIO()
    write_ipc(merged, handle, {REPLACES_KEY: names})
    where.write(f"{PARTITION}/_compacted-0123456789abcdef.arrow", handle.getvalue())
    _write_event_file(where, inputs[0], batch("r2", "w0", 0, 5))  # other bytes, a listed name
    assert len(ids(log)) == 60  # the listed names are hidden, whatever they hold
    compact(log)
    assert len(ids(log)) == 60 and len(arrow_files(where)) == 1
