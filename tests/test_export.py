"""`pipeline export`: the events any engine reads, exactly a replay's, written only when changed.

Real files in a tmp data dir; the CLI in-process (`cli`) for exit codes and messages; a real
process killed mid-export for the crash case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.store.eventlog import EventLog
from pipeline.store.maintenance import compact
from schemas import event_id
from stages.export import run_export
from stages.export.transform import source_key
from tests.conftest import ROOT, CliResult
from tests.writer_proc import batch

Cli = Callable[..., CliResult]
DAY = "2026-01-02"


def day_batch(run_id: str, writer: str, number: int, size: int, day: int) -> dict[str, list]:
    """`batch`, moved to 2026-01-(2 + day)."""
    columns = batch(run_id, writer, number, size)
    # The event ids `batch` draws do not depend on the day: ours do, as real ones would.
    columns["event_id"] = [event_id(run_id, f"{writer}-{number}-{i}-{day}") for i in range(size)]
    shift = timedelta(days=day)
    for name in ("scheduled_at", "started_at"):
        columns[name] = [t + shift for t in columns[name]]  # type: ignore[operator]
    return columns


def write_days(log: EventLog, days: int = 2, per_day: int = 3) -> None:
    for day in range(days):
        out = log.writer("r1", "w0")
        for number in range(per_day):
            out.append("requests", day_batch("r1", "w0", number, 5, day))


def replayed(log: EventLog, table: str = "requests") -> pl.DataFrame:
    return log.replay(table).collect().unique("event_id", keep="first").sort("event_id")


def exported(folder: Path, table: str = "requests") -> pl.DataFrame:
    frame = pl.read_parquet(folder / table, hive_partitioning=True)
    return frame.drop("date").sort("event_id")


def parquet_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


def test_the_export_holds_exactly_the_replayed_events_with_their_types(data_dir: Path) -> None:
    log = EventLog(data_dir)
    write_days(log)
    log.writer("r1", "w9").append("requests", day_batch("r1", "w0", 0, 5, 0))  # a duplicate
    report = run_export(data_dir, "parquet")
    folder = data_dir / "export" / "parquet"
    requests, runs, samples = report.tables
    assert (runs.written, samples.written) == ([], [])  # tables with no events: no folder
    assert (requests.table, requests.written, requests.rows) == (
        "requests",
        ["2026-01-02", "2026-01-03"],
        30,
    )
    assert sorted(p.name for p in (folder / "requests").iterdir()) == [
        "date=2026-01-02",
        "date=2026-01-03",
    ]
    out, want = exported(folder), replayed(log)
    assert out.height == 30 and out.equals(want)
    schema = pq.read_schema(folder / "requests" / f"date={DAY}" / "part-0.parquet")
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("event_id").nullable  # required, as declared
    day = pq.read_table(folder / "requests" / f"date={DAY}" / "part-0.parquet")
    assert day.column("started_at").is_valid().to_pylist() == [True] * 15
    starts = day.column("started_at").to_pylist()
    assert starts == sorted(starts)  # one fixed order: time, then event id


def test_a_second_export_writes_nothing_and_a_new_file_rewrites_only_its_day(
    data_dir: Path,
) -> None:
    log = EventLog(data_dir)
    write_days(log)
    folder = data_dir / "export" / "parquet"
    run_export(data_dir, "parquet", tables=["requests"])
    before = parquet_files(folder)
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}
    (again,) = run_export(data_dir, "parquet", tables=["requests"]).tables
    assert (again.written, again.unchanged, again.rows) == ([], 2, 0)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")} == stamps
    log.writer("r2", "w0").append("requests", day_batch("r2", "w0", 7, 4, 1))  # a late arrival
    (late,) = run_export(data_dir, "parquet", tables=["requests"]).tables
    assert (late.written, late.unchanged, late.rows) == (["2026-01-03"], 1, 19)
    after = parquet_files(folder)
    first = f"requests/date={DAY}/part-0.parquet"
    assert after[first] == before[first]
    assert exported(folder).equals(replayed(log))


def test_compaction_changes_the_files_but_not_one_exported_byte(data_dir: Path) -> None:
    log = EventLog(data_dir)
    write_days(log)
    run_export(data_dir, "parquet", tables=["requests"])
    folder = data_dir / "export" / "parquet"
    before = parquet_files(folder)
    assert len(compact(log, before=date(2026, 1, 10))) == 2
    (after,) = run_export(data_dir, "parquet", tables=["requests"]).tables
    assert after.written == ["2026-01-02", "2026-01-03"]  # the files changed: both read again
    assert parquet_files(folder) == before  # the same events: the same bytes


def test_an_archived_day_leaves_the_export_too(data_dir: Path, cli: Cli) -> None:
    log = EventLog(data_dir)
    write_days(log)
    assert cli("--data-dir", str(data_dir), "export", "--table", "requests").code == 0
    assert cli("--data-dir", str(data_dir), "archive", "--older-than", "0").code == 0
    result = cli("--data-dir", str(data_dir), "export", "--table", "requests", "--json")
    assert result.code == 0, result.err
    assert '"removed": 2' in result.out
    assert list((data_dir / "export" / "parquet" / "requests").iterdir()) == []


def test_export_to_an_out_folder_elsewhere(data_dir: Path, tmp_path: Path, cli: Cli) -> None:
    write_days(EventLog(data_dir))
    out = tmp_path / "lake"
    result = cli("--data-dir", str(data_dir), "export", "--out", str(out))
    assert result.code == 0, result.err
    assert f"written to {out}" in result.out
    assert exported(out).equals(replayed(EventLog(data_dir)))
    assert not (data_dir / "export").exists()  # nothing of it inside the data directory


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "csv"], "'csv' is not one of 'parquet', 'delta'"),
        (["--out", "{data}"], "is inside the data directory"),
        (["--out", "{data}/events"], "is inside the data directory"),
        (["--out", "{tmp}/file.txt"], "is not a directory"),
        (["--table", "nope"], "'nope' is not one of"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    data_dir: Path, tmp_path: Path, cli: Cli, args: list[str], message: str
) -> None:
    write_days(EventLog(data_dir), days=1, per_day=1)
    (tmp_path / "file.txt").write_text("x")
    filled = [a.format(data=data_dir, tmp=tmp_path) for a in args]
    result = cli("--data-dir", str(data_dir), "export", *filled)
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
    assert not (data_dir / "export").exists()


def test_a_missing_or_empty_data_dir_is_exit_2(tmp_path: Path, cli: Cli) -> None:
    result = cli("--data-dir", str(tmp_path / "nothing"), "export")
    assert (result.code, result.err.count("\n")) == (2, 1)
    assert "no data directory" in result.err
    (tmp_path / "empty").mkdir()
    result = cli("--data-dir", str(tmp_path / "empty"), "export")
    assert (result.code, result.err.count("\n")) == (2, 1)
    assert "nothing to export" in result.err


@pytest.mark.parametrize(
    "plant",
    ["requests/date=2026-01-02/other.parquet", "requests/notes.txt", "requests/date=2026-13-45/x"],
)
def test_files_the_export_did_not_write_are_refused_not_replaced(
    data_dir: Path, tmp_path: Path, cli: Cli, plant: str
) -> None:
    write_days(EventLog(data_dir), days=1, per_day=1)
    out = tmp_path / "lake"
    (out / plant).parent.mkdir(parents=True)
    (out / plant).write_text("mine")
    result = cli("--data-dir", str(data_dir), "export", "--out", str(out))
    assert result.code in (1, 2) and result.err.count("\n") == 1, result.err
    assert str(out / plant.rsplit("/", 1)[0]) in result.err
    assert (out / plant).read_text() == "mine"
    assert not (out / "requests" / f"date={DAY}" / "part-0.parquet").exists()


def test_a_link_in_the_export_folder_is_never_followed(
    data_dir: Path, tmp_path: Path, cli: Cli
) -> None:
    write_days(EventLog(data_dir), days=1, per_day=1)
    out, elsewhere = tmp_path / "lake", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "requests").symlink_to(elsewhere)
    result = cli("--data-dir", str(data_dir), "export", "--out", str(out))
    assert result.code == 1
    assert "links inside the export directory are never followed" in result.err
    assert list(elsewhere.iterdir()) == []
    (data_dir / "export").mkdir()
    (data_dir / "export" / "parquet").symlink_to(elsewhere)
    result = cli("--data-dir", str(data_dir), "export")
    assert result.code == 1
    assert "links inside the data directory are never followed" in result.err
    assert list(elsewhere.iterdir()) == []


KILLER = """
import os, sys
from pathlib import Path
import stages.export.sinks as sinks
from stages.export import run_export

calls = []
real = sinks.replace_atomic

def replace_then_die(tmp, final):
    global calls
    calls += [final] if final.suffix == ".parquet" else []
    if len(calls) == 2:
        os._exit(9)  # killed with the second day staged, not yet in place
    real(tmp, final)

sinks.replace_atomic = replace_then_die
run_export(Path(sys.argv[1]), "parquet", tables=["requests"])
"""


def test_a_killed_export_leaves_every_day_old_or_new_and_the_next_one_finishes(
    data_dir: Path,
) -> None:
    log = EventLog(data_dir)
    write_days(log)
    run_export(data_dir, "parquet", tables=["requests"])
    folder = data_dir / "export" / "parquet"
    old = parquet_files(folder)
    for day in range(2):  # both days change
        log.writer("r2", "w0").append("requests", day_batch("r2", "w0", day, 3, day))
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(data_dir)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 9, proc.stderr
    now = parquet_files(folder)
    assert sorted(now) == sorted(old)  # no other file any reader's glob would pick up
    second = "requests/date=2026-01-03/part-0.parquet"
    assert now[second] == old[second]  # the day being written when killed: still the old one
    assert list((data_dir / ".staging").iterdir())  # its temp file, which no engine reads
    (done,) = run_export(data_dir, "parquet", tables=["requests"]).tables
    assert done.written == ["2026-01-03"]  # the first day was in place already
    assert list((data_dir / ".staging").iterdir()) == []
    assert exported(folder).equals(replayed(log))


def test_a_newer_schema_in_the_key_rewrites_every_day(data_dir: Path) -> None:
    """A version whose table gains a column must not keep files without it."""
    from schemas import TABLES

    spec = TABLES["requests"]
    files = ["a.arrow", "b.arrow"]
    narrower = type(spec)(**{**spec.__dict__, "schema": spec.schema.remove(0)})
    assert source_key(spec, files) != source_key(narrower, files)
    assert source_key(spec, files) == source_key(spec, list(reversed(files)))


events = st.lists(  # (day, batch number, size): a number is a batch's events, written once
    st.tuples(st.integers(0, 2), st.integers(0, 5), st.integers(1, 6)),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t[1],
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=events, split=st.booleans())
def test_the_same_events_in_any_files_export_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[int, int, int]], split: bool
) -> None:
    """Events written once per batch, or again as duplicates from another writer, or after a
    compaction: the export's bytes depend on the set of events only."""
    outputs = []
    for variant in range(3):
        data = tmp_path_factory.mktemp("d") / "data"
        log = EventLog(data)
        for day, number, size in batches:
            log.writer("r1", "w0").append("requests", day_batch("r1", "w0", number, size, day))
        if variant == 1 and split:
            day, number, size = batches[0]
            log.writer("r1", "w7").append("requests", day_batch("r1", "w0", number, size, day))
        if variant == 2:
            compact(log, before=date(2026, 2, 1))
        run_export(data, "parquet", tables=["requests"])
        outputs.append(parquet_files(data / "export" / "parquet"))
        assert exported(data / "export" / "parquet").equals(replayed(log))
    assert outputs[0] == outputs[1] == outputs[2]


def test_the_time_of_an_export_is_in_no_file(data_dir: Path) -> None:
    write_days(EventLog(data_dir), days=1)
    run_export(data_dir, "parquet", tables=["requests"])
    path = data_dir / "export" / "parquet" / "requests" / f"date={DAY}" / "part-0.parquet"
    first = path.read_bytes()
    path.unlink()
    run_export(data_dir, "parquet", tables=["requests"])
    assert path.read_bytes() == first


def delta_rows(path: Path) -> pl.DataFrame:
    from deltalake import DeltaTable

    frame = pl.from_arrow(DeltaTable(str(path)).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.drop("date").sort("event_id")


def test_delta_holds_the_replayed_events_and_commits_only_what_changed(
    data_dir: Path, cli: Cli
) -> None:
    from deltalake import DeltaTable

    log = EventLog(data_dir)
    write_days(log)
    (first,) = run_export(data_dir, "delta", tables=["requests"]).tables
    path = data_dir / "export" / "delta" / "requests"
    assert (first.written, first.rows) == (["2026-01-02", "2026-01-03"], 30)
    assert delta_rows(path).equals(replayed(log))
    version = DeltaTable(str(path)).version()
    (again,) = run_export(data_dir, "delta", tables=["requests"]).tables
    assert (again.written, again.unchanged) == ([], 2)
    assert DeltaTable(str(path)).version() == version  # no commit at all
    log.writer("r2", "w0").append("requests", day_batch("r2", "w0", 9, 4, 1))
    (late,) = run_export(data_dir, "delta", tables=["requests"]).tables
    assert late.written == ["2026-01-03"]
    assert DeltaTable(str(path)).version() == version + 1  # one commit: that day's overwrite
    assert delta_rows(path).equals(replayed(log))
    assert cli("--data-dir", str(data_dir), "archive", "--older-than", "0").code == 0
    (gone,) = run_export(data_dir, "delta", tables=["requests"]).tables
    assert gone.removed == ["2026-01-02", "2026-01-03"]
    assert DeltaTable(str(path)).to_pyarrow_table().num_rows == 0


def test_a_delta_table_the_export_did_not_write_is_refused(
    data_dir: Path, tmp_path: Path, cli: Cli
) -> None:
    from deltalake import DeltaTable, write_deltalake

    write_days(EventLog(data_dir), days=1, per_day=1)
    theirs = tmp_path / "lake" / "requests"
    write_deltalake(str(theirs), pa.table({"x": [1, 2]}))
    result = cli(
        "--data-dir", str(data_dir), "export", "--format", "delta", "--out", str(theirs.parent)
    )
    assert result.code == 2 and "a Delta table `pipeline export` did not write" in result.err
    assert DeltaTable(str(theirs)).version() == 0


def test_delta_without_its_extra_says_how_to_install_it(
    data_dir: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_days(EventLog(data_dir), days=1, per_day=1)
    monkeypatch.setitem(sys.modules, "deltalake", None)  # what an install without it imports
    result = cli("--data-dir", str(data_dir), "export", "--format", "delta")
    assert result.code == 2
    assert "pip install 'llm-bench-pipeline[delta]'" in result.err
    assert not (data_dir / "export").exists()


def test_an_older_event_file_exports_its_missing_columns_as_a_replay_reads_them(
    data_dir: Path,
) -> None:
    from pipeline.store.eventlog import conform
    from schemas import TABLES

    log = EventLog(data_dir)
    partition = data_dir / "events" / "requests" / f"date={DAY}"
    partition.mkdir(parents=True)
    rows = batch("old", "w0", 0, 3)
    rows["worker"] = [7, 7, 7]
    old = conform(TABLES["requests"], rows).drop_columns(["server_request_id", "worker"])
    with pa.ipc.new_file(str(partition / "old-w0-000000.arrow"), old.schema) as writer:
        writer.write_table(old)  # a file from before those columns existed
    log.writer("new").append("requests", batch("new", "w0", 1, 2))
    run_export(data_dir, "parquet", tables=["requests"])
    out = exported(data_dir / "export" / "parquet")
    assert out.columns == TABLES["requests"].schema.names
    assert out.equals(replayed(log))
    assert out.filter(pl.col("run_id") == "old")["worker"].to_list() == [0, 0, 0]  # the default


def test_a_damaged_delta_log_is_one_line_and_exit_1(data_dir: Path, cli: Cli) -> None:
    write_days(EventLog(data_dir), days=1, per_day=1)
    assert cli("--data-dir", str(data_dir), "export", "--format", "delta").code == 0
    log = data_dir / "export" / "delta" / "requests" / "_delta_log" / "00000000000000000000.json"
    log.write_text("{not json")
    EventLog(data_dir).writer("r2").append("requests", day_batch("r2", "w0", 5, 2, 0))
    result = cli("--data-dir", str(data_dir), "export", "--format", "delta")
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"error: {log.parent.parent}")


def test_two_exports_into_one_out_folder_take_turns(
    data_dir: Path, tmp_path: Path, cli: Cli
) -> None:
    """Each holds the --out folder's lock as a stage holds the data directory's, so exports
    from two data directories never interleave their days and state there."""
    from pipeline.store.lock import LockOptions, exclusive_lock

    write_days(EventLog(data_dir), days=1, per_day=1)
    out = tmp_path / "lake"
    out.mkdir()
    (tmp_path / "pipeline.toml").write_text(
        'lock_timeout = "200ms"\n[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n'
    )
    with exclusive_lock(out, LockOptions(command="export")):
        result = cli("--data-dir", str(data_dir), "export", "--out", str(out))
    assert result.code == 1
    assert "(pipeline export)" in result.err
    assert not (out / "requests").exists()
    assert cli("--data-dir", str(data_dir), "export", "--out", str(out)).code == 0


def test_a_planted_partition_that_is_no_day_stops_the_export_naming_it(
    data_dir: Path, cli: Cli
) -> None:
    write_days(EventLog(data_dir), days=1, per_day=1)
    planted = data_dir / "events" / "requests" / "date=2026-02-30"
    planted.mkdir()
    result = cli("--data-dir", str(data_dir), "export")
    assert (result.code, result.err.count("\n")) == (1, 1), result.err
    assert f"{planted} is not a date partition" in result.err
    assert not (data_dir / "export" / "parquet" / "requests").exists()


def test_a_progress_bar_on_a_terminal_counts_the_days_and_none_on_a_pipe(
    data_dir: Path, tmp_path: Path
) -> None:
    import fcntl
    import pty
    import struct
    import termios

    from tests.test_execute_cli import _read_to_the_end

    write_days(EventLog(data_dir))
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
        "PYTHONPATH": str(ROOT),
        "TERM": "xterm-256color",
    }

    def command(out: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", "--data-dir", str(data_dir), "export"] + [
            "--out",
            str(tmp_path / out),
        ]

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(command("tty"), env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    tty = _read_to_the_end(master).decode("utf-8", "replace")
    os.close(master)
    assert proc.wait(timeout=120) == 0, tty
    piped = subprocess.run(command("pipe"), env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert all(part in tty for part in ("━", "2/2", "requests 2026-01-03"))
    assert "2 partitions written" in tty and "2 partitions written" in piped.stdout
    assert "━" not in piped.stderr + piped.stdout and "\x1b[" not in piped.stderr


def test_a_data_dir_from_before_the_rename_exports_what_it_replays(tmp_path: Path) -> None:
    """The golden directory's old `_compacted-*` file, its crash leftover and a late file: the
    export holds each of its 11 events once, as a replay reads them."""
    import shutil

    from tests.test_compacted_names import GOLDEN

    data = tmp_path / "data"
    shutil.copytree(GOLDEN, data)
    run_export(data, "parquet", tables=["requests"])
    out = exported(data / "export" / "parquet")
    assert out.height == 11 and out.equals(replayed(EventLog(data)))


def test_an_object_store_data_dir_exports_into_a_local_out_folder(
    s3_endpoint: str, tmp_path: Path, cli: Cli
) -> None:
    """Read through the store like any replay (moto on 127.0.0.1), compacted there first."""
    import uuid

    from tests.conftest import S3_BUCKET

    url = f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}"
    log = EventLog(url)
    write_days(log)
    compact(log, before=date(2026, 1, 10))
    result = cli("--data-dir", url, "export")
    assert result.code == 2 and "--out:" in result.err and "not a local folder" in result.err
    out = tmp_path / "lake"
    result = cli("--data-dir", url, "export", "--out", str(out), "--table", "requests")
    assert result.code == 0, result.err
    assert exported(out).height == 30 and exported(out).equals(replayed(log))
