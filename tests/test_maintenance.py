"""compact and archive keep the set of events, at every step, and name what they cannot read."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import CorruptEventFileError
from pipeline.store.eventlog import REPLACED_KEY, REPLACES_KEY, EventLog, conform, write_ipc
from pipeline.store.fsutil import unlink_below
from pipeline.store.maintenance import archive, compact
from schemas import TABLES
from tests.writer_proc import batch


def ids(log: EventLog) -> list[str]:
    return sorted(log.replay("requests").collect()["event_id"].to_list())


def arrow_files(data_dir: Path, day: str = "2026-01-02") -> list[str]:
    return sorted(p.name for p in (data_dir / f"events/requests/date={day}").glob("*.arrow"))


@pytest.fixture
def log(data_dir: Path) -> EventLog:
    log = EventLog(data_dir)
    for writer in ("w0", "w1"):
        out = log.writer("r1", writer)
        for number in range(3):
            out.append("requests", batch("r1", writer, number, 10))
    return log


def test_compact_merges_a_closed_partition_into_one_file_with_the_same_events(
    log: EventLog,
) -> None:
    before = ids(log)
    (result,) = compact(log)
    assert (result.files_in, result.events, result.duplicates_dropped) == (6, 60, 0)
    assert ids(log) == before
    (name,) = arrow_files(log.data_dir)
    assert name.startswith("compacted-")
    assert compact(log) == []  # already compact


def test_compact_drops_duplicate_events(log: EventLog) -> None:
    log.writer("r1", "w9").append("requests", batch("r1", "w0", 0, 10))  # the same 10 events again
    assert len(log.replay("requests").collect()) == 70
    (result,) = compact(log)
    assert result.duplicates_dropped == 10
    assert len(ids(log)) == 60 == len(set(ids(log)))


def test_compact_leaves_todays_partition_alone(data_dir: Path) -> None:
    log = EventLog(data_dir)
    today = datetime.now(UTC)
    for number in range(2):
        rows = batch("r1", "w0", number, 3)
        rows["started_at"] = [today] * 3
        log.writer("r1", f"w{number}").append("requests", rows)
    assert compact(log) == []
    assert len(arrow_files(data_dir, today.strftime("%Y-%m-%d"))) == 2


def test_a_crash_after_publishing_and_before_deleting_loses_and_doubles_nothing(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ids(log)
    calls = {"n": 0}

    def dying_unlink(root: Path, path: Path) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # stands for SIGKILL between two deletions
        return unlink_below(root, path)

    monkeypatch.setattr("pipeline.store.maintenance.unlink_below", dying_unlink)
    with pytest.raises(KeyboardInterrupt):
        compact(log)
    monkeypatch.undo()
    assert len(arrow_files(log.data_dir)) == 1 + 4  # the merged file and 4 not yet deleted inputs
    assert ids(log) == before  # readers skip the inputs the merged file names
    compact(log)
    assert len(arrow_files(log.data_dir)) == 1
    assert ids(log) == before


def test_a_crash_before_publishing_leaves_the_inputs_as_they_were(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, files = ids(log), arrow_files(log.data_dir)

    def dying_publish(tmp: Path, final: Path) -> bool:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("pipeline.store.maintenance.publish_new", dying_publish)
    with pytest.raises(KeyboardInterrupt):
        compact(log)
    assert arrow_files(log.data_dir) == files and ids(log) == before


def test_compacting_twice_with_late_files_keeps_every_event(log: EventLog) -> None:
    compact(log)
    log.writer("r2", "w0").append("requests", batch("r2", "w0", 0, 5))  # a late file for that day
    assert len(ids(log)) == 65
    compact(log)
    assert len(arrow_files(log.data_dir)) == 1 and len(ids(log)) == 65


def test_compact_names_a_corrupt_file_and_quarantines_it_when_asked(log: EventLog) -> None:
    (path,) = (log.data_dir / "events/requests/date=2026-01-02").glob("r1-w1.*-000001.arrow")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptEventFileError, match=re.escape(path.name)):
        compact(log)
    (result,) = compact(log, skip_corrupt=True)
    assert result.quarantined == 1 and result.events == 50
    assert (log.data_dir / "quarantine/events/requests/date=2026-01-02" / path.name).exists()


def test_archive_moves_old_partitions_and_keeps_their_files(log: EventLog) -> None:
    recent = batch("r3", "w0", 0, 4)
    recent["started_at"] = [datetime.now(UTC)] * 4
    log.writer("r3").append("requests", recent)
    results = archive(log, older_than_days=30)
    assert [(r.table, r.date, r.files) for r in results] == [("requests", "2026-01-02", 6)]
    assert len(ids(log)) == 4  # only the recent partition is replayed
    archived = sorted((log.data_dir / "archive/events/requests/date=2026-01-02").glob("*.arrow"))
    assert len(archived) == 6
    rows = sum(pa.ipc.open_file(p).read_all().num_rows for p in archived)
    assert rows == 60


def test_compact_before_a_given_day(log: EventLog) -> None:
    assert compact(log, before=date(2026, 1, 2)) == []
    assert len(compact(log, before=date(2026, 1, 3))) == 1


def test_batch_sources_of_a_compacted_file_keep_only_the_runs_asked_for(log: EventLog) -> None:
    log.writer("r2").append("requests", batch("r2", "w0", 0, 7))
    compact(log)
    (name,) = arrow_files(log.data_dir)
    assert name.startswith("compacted-")  # one file holding both runs
    replay = log.replay("requests", run_ids=["r2"])
    tables = [pa.Table.from_batches(list(read())) for read in replay.batch_sources(["run_id"])]
    assert pa.concat_tables(tables).column("run_id").to_pylist() == ["r2"] * 7


def _write_event_file(path: Path, rows: dict[str, list[object]]) -> None:
    """An event file put in place by hand (as a name collision, or an older version, would)."""
    with path.open("wb") as handle:
        write_ipc(conform(TABLES["requests"], rows), handle)


def test_the_merged_file_lists_each_replaced_file_with_its_size_and_digest(log: EventLog) -> None:
    partition = log.data_dir / "events/requests/date=2026-01-02"
    inputs = {p.name: p.read_bytes() for p in partition.glob("*.arrow")}
    compact(log)
    (merged,) = partition.glob("*.arrow")
    metadata = pa.ipc.open_file(merged).schema.metadata
    assert json.loads(metadata[REPLACES_KEY]) == sorted(inputs)  # what older versions read
    assert json.loads(metadata[REPLACED_KEY]) == [
        {
            "name": name,
            "size": len(data),
            "blake2b": hashlib.blake2b(data, digest_size=16).hexdigest(),
        }
        for name, data in sorted(inputs.items())
    ]


def test_a_later_file_under_a_listed_name_is_neither_hidden_nor_deleted(log: EventLog) -> None:
    """Should a name ever come back (a token collision, a hand-made file), what a compacted file
    lists hides and deletes only the file it merged, byte for byte."""
    compact(log)
    partition = log.data_dir / "events/requests/date=2026-01-02"
    (merged,) = partition.glob("*.arrow")
    listed = json.loads(pa.ipc.open_file(merged).schema.metadata[REPLACES_KEY])[0]
    _write_event_file(partition / listed, batch("r2", "w0", 0, 5))
    assert len(ids(log)) == 65
    compact(log)
    assert len(ids(log)) == 65 and len(arrow_files(log.data_dir)) == 1


def test_an_older_compacted_file_hides_the_names_it_lists_as_before(log: EventLog) -> None:
    """A merged file from before the digests lists names only: those files are skipped (and
    deleted by the next compact) whatever their content, exactly as that version did."""
    partition = log.data_dir / "events/requests/date=2026-01-02"
    inputs = sorted(partition.glob("*.arrow"))
    merged = pa.concat_tables([pa.ipc.open_file(p).read_all() for p in inputs])
    names = json.dumps([p.name for p in inputs]).encode()
    with (partition / "_compacted-0123456789abcdef.arrow").open("wb") as handle:
        write_ipc(merged, handle, {REPLACES_KEY: names})
    _write_event_file(inputs[0], batch("r2", "w0", 0, 5))  # other bytes, a listed name
    assert len(ids(log)) == 60  # the listed names are hidden, whatever they hold
    compact(log)
    assert len(ids(log)) == 60 and len(arrow_files(log.data_dir)) == 1
