"""Compacted files are named so that no engine hides them, and the old `_compacted-*` still read.

pyarrow's datasets (and Spark, Hadoop) skip names starting with `_` or `.`: a partition
compacted into `_compacted-<digest>.arrow` read as zero rows there. The golden data directory
`tests/golden/old_compacted` was written by the version before the rename (its own `compact`):
an old-named merged file, an input a crash left behind after publishing it, and a file that
arrived later.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.store.eventlog import EventLog, is_compacted_name
from pipeline.store.maintenance import compact
from tests.strategies import names
from tests.writer_proc import batch

GOLDEN = Path(__file__).parent / "golden" / "old_compacted"
PARTITION = "events/requests/date=2026-01-02"
CLOSED = date(2026, 1, 3)


def replay_ids(log: EventLog) -> list[str]:
    return sorted(log.replay("requests").collect()["event_id"].to_list())


def pyarrow_ids(data_dir: Path) -> list[str]:
    """What a pyarrow dataset over the table's folder reads, with its default options."""
    dataset = ds.dataset(data_dir / "events/requests", format="ipc", partitioning="hive")
    return sorted(dataset.to_table(columns=["event_id"]).column("event_id").to_pylist())


def test_a_pyarrow_dataset_reads_a_compacted_partition_as_replay_does(data_dir: Path) -> None:
    log = EventLog(data_dir)
    for writer in ("w0", "w1"):
        log.writer("r1", writer).append("requests", batch("r1", writer, 0, 5))
    (result,) = compact(log, before=CLOSED)
    assert result.files_in == 2
    (name,) = [p.name for p in (data_dir / PARTITION).glob("*.arrow")]
    assert not name.startswith(("_", "."))
    assert pyarrow_ids(data_dir) == replay_ids(log) and len(replay_ids(log)) == 10


@pytest.fixture
def old_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(GOLDEN, data)
    return data


def test_an_old_named_compacted_file_reads_and_hides_what_it_replaced(old_dir: Path) -> None:
    log = EventLog(old_dir)
    visible, replaced = log.listing("requests", "2026-01-02")
    assert [f.name for f in visible if f.run_id is None] == ["_compacted-3953a2a9b60f845f.arrow"]
    assert [f.name for f in replaced] == ["old1-w0.31e19c6b-000000.arrow"]  # the crash leftover
    ids = replay_ids(log)
    assert len(ids) == 11 == len(set(ids))  # 8 merged + 3 late, the leftover not doubled
    assert log.replay("requests", run_ids=["old2"]).collect().height == 3


def test_compact_merges_an_old_named_file_into_a_new_named_one(old_dir: Path) -> None:
    log = EventLog(old_dir)
    before = replay_ids(log)
    (result,) = compact(log, before=CLOSED)
    assert (result.files_in, result.events, result.duplicates_dropped) == (2, 11, 0)
    (name,) = [p.name for p in (old_dir / PARTITION).iterdir()]  # old file and leftover gone
    assert name.startswith("compacted-") and is_compacted_name(name)
    assert replay_ids(log) == before == pyarrow_ids(old_dir)
    assert compact(log, before=CLOSED) == []


def test_a_run_named_like_the_prefix_is_still_a_run(data_dir: Path) -> None:
    log = EventLog(data_dir)
    log.writer("compacted", "w0").append("requests", batch("compacted", "w0", 0, 3))
    log.writer("other", "w0").append("requests", batch("other", "w0", 1, 2))
    (mine,) = log.files("requests", run_ids=["compacted"])
    assert mine.run_id == "compacted"
    assert log.replay("requests", run_ids=["compacted"]).collect().height == 3


@given(
    run_id=names,
    writer=st.from_regex(r"[A-Za-z0-9_.]{1,8}", fullmatch=True),
    token=st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
    seq=st.integers(0, 10**7),
)
def test_no_writer_file_name_is_taken_for_a_compacted_one(
    run_id: str, writer: str, token: str, seq: int
) -> None:
    assert not is_compacted_name(f"{run_id}-{writer}.{token}-{seq:06d}.arrow")
    assert not is_compacted_name(f"{run_id}-{writer}-{seq:06d}.arrow")  # before tokens
