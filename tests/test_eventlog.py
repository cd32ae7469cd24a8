"""The append-only event log: what is appended is what is replayed, whatever happens to writers.

The store's promises run against both backends (`store_dir`, `backend`: a local folder and a
local S3); what only a local folder has (the staging folder) is tested on it alone."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import CorruptEventFileError, InputError, InvalidNameError
from pipeline.store.eventlog import EventLog, conform
from pipeline.store.maintenance import compact
from schemas import TABLES, RequestEvent
from tests.conftest import ROOT, StoreDir
from tests.strategies import request_events, to_batch
from tests.writer_proc import batch


def event_ids(log: EventLog, table: str = "requests", **kwargs: object) -> list[str]:
    return sorted(log.replay(table, **kwargs).collect()["event_id"].to_list())  # type: ignore[arg-type]


def writer_cmd(data: Path | str, run_id: str, writer: str, batches: int, size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.writer_proc",
        str(data),
        run_id,
        writer,
        str(batches),
        str(size),
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(
        request_events(run_id="run-1"), min_size=1, max_size=30, unique_by=lambda e: e.event_id
    ),
    cuts=st.lists(st.integers(0, 30), max_size=5),
    writers=st.integers(1, 3),
)
def test_replay_returns_exactly_the_appended_events(
    backend: Callable[[], StoreDir],
    events: list[RequestEvent],
    cuts: list[int],
    writers: int,
) -> None:
    where = backend()
    log = EventLog(where.location)
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    outs = [log.writer("run-1", f"w{i}") for i in range(writers)]
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        outs[n % writers].append("requests", to_batch("requests", events[lo:hi]))
    frame = log.replay("requests").collect()
    back = sorted(
        (RequestEvent.model_validate(r) for r in frame.to_dicts()), key=lambda e: e.event_id
    )
    assert back == sorted(events, key=lambda e: e.event_id)
    assert not [k for k in where.keys() if not k.startswith("events/")]  # no temp file left


def test_files_are_partitioned_by_date_and_named_by_run_writer_seq(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    out = log.writer("r1", "w3")
    wheres = out.append("requests", batch("r1", "w3", 0, 2))
    assert re.fullmatch(r"w3\.[0-9a-f]{8}", out.name)  # the writer and this instance's token
    key = f"events/requests/date=2026-01-02/r1-{out.name}-000000.arrow"
    assert wheres == [f"{store_dir.location}/{key}"] and store_dir.keys() == [key]
    with pa.ipc.open_file(pa.py_buffer(store_dir.read(key))) as reader:
        assert reader.schema.equals(TABLES["requests"].schema)


def test_filters_by_date_and_run_are_pushed_to_the_files(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    log.writer("r1").append("requests", batch("r1", "w0", 0, 3))  # 2026-01-02
    rows = batch("r2", "w0", 0, 2)
    rows["started_at"] = [datetime(2026, 1, 5, tzinfo=UTC)] * 2
    log.writer("r2").append("requests", rows)
    assert len(event_ids(log)) == 5
    assert len(event_ids(log, run_ids=["r2"])) == 2
    assert len(event_ids(log, since=date(2026, 1, 3))) == 2
    assert len(event_ids(log, until=date(2026, 1, 2))) == 3
    assert len(log.replay("requests", run_ids=["r1"]).files) == 1


def test_an_older_file_without_a_newer_column_reads_as_null_or_default(
    store_dir: StoreDir,
) -> None:
    log = EventLog(store_dir.location)
    # Two files from before `server_request_id` and `worker`, one from between the two columns.
    for seq, dropped in enumerate(
        [["server_request_id", "worker"], ["server_request_id", "worker"], ["server_request_id"]]
    ):
        rows = batch("old", "w0", seq * 2, 2)
        rows["worker"] = [7, 7]
        old = conform(TABLES["requests"], rows).drop_columns(dropped)
        handle = io.BytesIO()
        with pa.ipc.new_file(handle, old.schema) as writer:
            writer.write_table(old)
        store_dir.write(
            f"events/requests/date=2026-01-02/old-w0-00000{seq}.arrow", handle.getvalue()
        )
    log.writer("new").append("requests", batch("new", "w0", 1, 2))
    frame = log.replay("requests").collect().sort("run_id", "event_id")
    assert frame.columns == TABLES["requests"].schema.names
    assert frame.height == 8
    assert frame.filter(pl.col("run_id") == "old")["server_request_id"].to_list() == [None] * 6
    # The model's default where the file lacks the column, the file's value where it has it.
    assert sorted(frame.filter(pl.col("run_id") == "old")["worker"].to_list()) == [0] * 4 + [7] * 2
    # The per-file Arrow readers (aggregate's fast path) read the same values, typed the same.
    columns = ["run_id", "worker", "server_request_id", "started_at", "chunk_offsets_us"]
    read = [b for source in log.replay("requests").batch_sources(columns) for b in source()]
    fast = pl.from_arrow(pa.Table.from_batches(read))
    assert isinstance(fast, pl.DataFrame)
    assert fast.schema == frame.select(columns).schema
    assert sorted(map(repr, fast.rows())) == sorted(map(repr, frame.select(columns).rows()))
    # Compaction merges the old and new files by the same plan: the merged file reads exactly
    # as the files did (a default, not a null, where an older file lacked a defaulted column).
    compact(log, before=date(2027, 1, 1))
    assert len(log.files("requests")) == 1
    merged = log.replay("requests").collect().sort("run_id", "event_id")
    assert merged.equals(frame)


def test_staging_and_temporary_files_are_never_read(data_dir: Path) -> None:
    """Local only: an object store has no staging folder (a PUT is whole or absent)."""
    log = EventLog(data_dir)
    log.writer("r1").append("requests", batch("r1", "w0", 0, 2))
    (data_dir / ".staging" / "abc.tmp").write_bytes(b"half a file")
    partition = data_dir / "events/requests/date=2026-01-02"
    (partition / "r1-w0-000009.arrow.tmp").write_bytes(b"half a file")
    (partition / ".r1-w0-000010.partial").write_bytes(b"junk")
    assert len(event_ids(log)) == 2


def test_a_corrupt_file_is_named_and_quarantined_only_when_asked(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    log.writer("good").append("requests", batch("good", "w0", 0, 2))
    log.writer("bad").append("requests", batch("bad", "w0", 0, 2))
    (bad,) = [k for k in store_dir.keys() if "/bad-" in k]
    store_dir.write(bad, store_dir.read(bad)[:-40])  # truncated: the footer is gone
    with pytest.raises(CorruptEventFileError, match=re.escape(f"{store_dir.location}/{bad}")):
        log.replay("requests")
    replay = log.replay("requests", skip_corrupt=True)
    assert replay.quarantined == [f"{store_dir.location}/quarantine/{bad}"]
    assert f"quarantine/{bad}" in store_dir.keys() and bad not in store_dir.keys()
    assert replay.collect()["run_id"].unique().to_list() == ["good"]


def test_corruption_past_the_footer_is_named_at_collect(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    log.writer("r1").append("requests", batch("r1", "w0", 0, 50))
    (key,) = store_dir.keys()
    raw = bytearray(store_dir.read(key))
    middle = len(raw) // 2
    for i in range(middle, middle + 200):
        raw[i] ^= 0xFF  # scramble compressed record-batch bytes, keep the footer
    store_dir.write(key, bytes(raw))
    name = key.rsplit("/", 1)[-1]
    with pytest.raises(CorruptEventFileError, match=re.escape(name)):
        log.replay("requests").collect()
    (source,) = log.replay("requests").batch_sources(["run_id", "latency_us"])
    with pytest.raises(CorruptEventFileError, match=re.escape(name)):
        list(source())


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".."])
def test_unsafe_run_ids_are_refused(store_dir: StoreDir, bad: str) -> None:
    with pytest.raises(InvalidNameError, match="run_id"):
        EventLog(store_dir.location).writer(bad)
    assert store_dir.keys() == []


def test_a_batch_that_does_not_fit_the_schema_is_refused(store_dir: StoreDir) -> None:
    rows = batch("r1", "w0", 0, 2)
    del rows["status"]
    with pytest.raises(InputError, match="status"):
        EventLog(store_dir.location).writer("r1").append("requests", rows)
    with pytest.raises(InputError, match="unknown event table"):
        EventLog(store_dir.location).writer("r1").append("nope", rows)
    assert store_dir.keys() == []


def test_a_name_already_taken_is_never_overwritten(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    log.writer("r1").append("requests", batch("r1", "w0", 0, 2))
    (first,) = store_dir.keys()
    before = store_dir.read(first)
    (second,) = log.writer("r1").append("requests", batch("r1", "w0", 1, 2))  # a restarted writer
    assert store_dir.read(first) == before and not second.endswith(first)
    assert len(event_ids(log)) == 4
    # A writer whose next name is taken (a token collision, a hand-made file) takes the one
    # after it: the file there is never replaced.
    out = log.writer("r1", "w7")
    taken = f"events/requests/date=2026-01-02/r1-{out.name}-000000.arrow"
    store_dir.write(taken, before)
    (third,) = out.append("requests", batch("r1", "w7", 2, 2))
    assert third == f"{store_dir.location}/{taken[:-12]}000001.arrow"
    assert store_dir.read(taken) == before


def test_two_writer_processes_appending_at_once_lose_nothing(store_dir: StoreDir) -> None:
    procs = [
        subprocess.Popen(
            writer_cmd(store_dir.location, "run-x", f"w{i}", 20, 50),
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    ids = event_ids(EventLog(store_dir.location))
    assert len(ids) == len(set(ids)) == 2 * 20 * 50


def test_a_writer_killed_mid_append_leaves_only_whole_files(store_dir: StoreDir) -> None:
    proc = subprocess.Popen(
        writer_cmd(store_dir.location, "run-k", "w0", 100_000, 2000),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    published: list[int] = []
    deadline = time.monotonic() + 60
    while len(published) < 5 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("published"):
            published.append(int(line.split()[1]))
    time.sleep(0.013)  # land the kill somewhere inside the next append
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    published += [int(line.split()[1]) for line in proc.stdout.read().splitlines() if line]
    proc.stdout.close()
    log = EventLog(store_dir.location)
    frame = log.replay("requests").collect()  # every visible file opens and reads whole
    batches = frame["request_index"] // 2000
    counts = frame.group_by(batches).len()["len"].to_list()
    assert set(counts) == {2000}, "a batch is either wholly visible or not at all"
    seen = set(batches.unique().to_list())
    assert set(published) <= seen <= set(published) | {max(published) + 1}
