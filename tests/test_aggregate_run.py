"""`pipeline aggregate` over the real event log: byte-identical rebuilds, incremental = full,
plain Parquet types, run status, unknown prices, corrupt files, and the CLI's output."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.store.eventlog import EventLog
from pipeline.store.layout import Layout
from schemas import TABLES, ModelPrice
from stages.aggregate import RESULT_SCHEMA, run_aggregate, to_benchmark_result
from stages.aggregate.scan import COLUMNS
from stages.aggregate.transform import aggregate
from tests.conftest import CliResult
from tests.eventgen import RunSpec, many, write_run, write_runs

PRICES = load_config(cwd=Path("/nonexistent")).price


def outputs(data_dir: Path) -> tuple[bytes, bytes]:
    results, series = (Layout(data_dir).results, Layout(data_dir).timeseries)
    return results.read_bytes(), series.read_bytes()


@pytest.fixture
def log(data_dir: Path) -> EventLog:
    return EventLog(data_dir)


def test_rebuild_twice_gives_identical_bytes(log: EventLog, data_dir: Path) -> None:
    write_runs(log, many("r", 4, requests=150))
    first = run_aggregate(data_dir, PRICES)
    before = outputs(data_dir)
    second = run_aggregate(data_dir, PRICES)
    assert outputs(data_dir) == before
    assert first.total_rows == second.total_rows == 4
    assert first.mode == second.mode == "full"


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 3))
def test_incremental_equals_full(
    tmp_path_factory: pytest.TempPathFactory, seed: int, later: int
) -> None:
    data_dir = tmp_path_factory.mktemp("inc") / "data"
    log = EventLog(data_dir)
    specs = [
        replace(s, seed=seed + i)
        for i, s in enumerate(many(f"s{seed % 97}", 3 + later, requests=80))
    ]
    # One run still in progress at the first aggregate, finished before the second.
    running = replace(specs[0], finished=False)
    write_runs(log, [running, *specs[1:3]])
    run_aggregate(data_dir, PRICES, incremental=True)
    log.writer(specs[0].run_id, "w9").append("runs", _finished_only(specs[0]))
    write_runs(log, specs[3:])
    report = run_aggregate(data_dir, PRICES, incremental=True)
    assert report.mode == "incremental"
    assert sorted(report.rebuilt["run_id"]) == sorted(
        [specs[0].run_id, *(s.run_id for s in specs[3:])]
    )
    incremental = outputs(data_dir)
    run_aggregate(data_dir, PRICES)
    assert outputs(data_dir) == incremental


def _finished_only(spec: RunSpec) -> pa.Table:
    from tests.eventgen import request_table, run_table

    table = run_table(spec, request_table(spec))
    return table.filter(pa.compute.equal(table.column("kind"), "finished"))


OLDER_COLUMNS = {
    "requests": [
        "worker",
        "server_request_id",
        "reconnects",
        "input_token_rule",
        "output_token_rule",
    ],
    "runs": ["workers", "client_cpu_saturation", "client_saturated", "client_loop_lag_p95_ms"],
    "samples": ["worker", "loop_lag_us"],
}
"""Columns added to each table since the first event files (each with a default or null)."""
ZSTD_FRAME, LZ4_FRAME = b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18"


def test_older_zstd_event_files_replay_and_aggregate_as_current_ones(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """The same events as the current writer's lz4 files, rewritten as the first versions wrote
    them: zstd-compressed, without the columns added since, named without a writer token. They
    replay the same (a column the files lack as its default), and `pipeline aggregate` writes
    the same bytes from them."""
    current, older = EventLog(tmp_path / "current"), EventLog(tmp_path / "older")
    write_runs(current, many("z", 4, requests=80))
    zstd = pa.ipc.IpcWriteOptions(compression="zstd")
    for table, dropped in OLDER_COLUMNS.items():
        for seq, file in enumerate(current.files(table)):
            path = file.path
            with pa.memory_map(str(path)) as source:
                events = pa.ipc.open_file(source).read_all().drop_columns(dropped)
            partition = older.data_dir / path.parent.relative_to(current.data_dir)
            partition.mkdir(parents=True, exist_ok=True)
            name = partition / f"{file.run_id}-w0-{seq:06d}.arrow"
            with pa.ipc.new_file(str(name), events.schema, options=zstd) as writer:
                writer.write_table(events)
            assert ZSTD_FRAME in name.read_bytes() and LZ4_FRAME in path.read_bytes()
    for table, dropped in OLDER_COLUMNS.items():
        mine, theirs = (log.replay(table).collect().sort("event_id") for log in (current, older))
        assert theirs.height > 0 and theirs.columns == mine.columns
        assert theirs.drop(dropped).equals(mine.drop(dropped)), table
        for column in dropped:  # what an older file never held reads as the model's default
            default = TABLES[table].model.model_fields[column].default
            assert theirs[column].to_list() == [default] * theirs.height, (table, column)
    for log in (current, older):
        result = cli("--data-dir", str(log.data_dir), "aggregate", "--json")
        assert result.code == 0, result.err
        assert json.loads(result.out)["rows"] == 4
    assert outputs(older.data_dir) == outputs(current.data_dir)


def test_incremental_reprices_a_changed_model(log: EventLog, data_dir: Path) -> None:
    write_runs(log, many("p", 2, requests=60))
    run_aggregate(data_dir, PRICES)
    cheap = ModelPrice(input=0.01, output=0.02, as_of=date(2027, 1, 1))

    def repriced(model: str) -> ModelPrice | None:
        return cheap if model == "mock-large" else PRICES(model)

    report = run_aggregate(data_dir, repriced, incremental=True)
    assert report.rebuilt["model"].to_list() == ["mock-large"]
    incremental = outputs(data_dir)
    run_aggregate(data_dir, repriced)
    assert outputs(data_dir) == incremental


def test_outputs_are_plain_for_duckdb_and_pyarrow(log: EventLog, data_dir: Path) -> None:
    write_runs(log, many("d", 2, requests=60))
    report = run_aggregate(data_dir, PRICES)
    results, series = (Layout(data_dir).results, Layout(data_dir).timeseries)
    schema = pq.read_schema(results)
    assert not any(pa.types.is_dictionary(f.type) or "view" in str(f.type) for f in schema)
    assert schema.names == list(RESULT_SCHEMA)
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT run_id, operations, latency_p95_ms, error_rate_limited FROM '{results}' ORDER BY run_id"
        ).fetchall()
        seconds = con.execute(f"SELECT sum(started) FROM '{series}'").fetchone()
    assert [r[0] for r in rows] == ["d-000", "d-001"]
    assert seconds is not None and seconds[0] == sum(r[1] for r in rows)
    assert report.total_rows == 2
    for row in pl.read_parquet(results).iter_rows(named=True):
        to_benchmark_result(row)


def test_unknown_model_has_null_cost_and_a_warning(
    log: EventLog, data_dir: Path, cli: Callable[..., CliResult]
) -> None:
    write_run(log, RunSpec("u1", model="mystery-model", requests=40))
    write_run(log, RunSpec("u2", requests=40))
    result = cli("--data-dir", str(data_dir), "aggregate", "--json")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["unpriced_models"] == ["mystery-model"]
    assert "mystery-model" in result.err and "null" in result.err
    costs = {r["run_id"]: r["cost_usd"] for r in payload["rebuilt"]}
    assert costs["u1"] is None and costs["u2"] > 0


def test_cli_table_and_incremental(
    log: EventLog, data_dir: Path, cli: Callable[..., CliResult]
) -> None:
    write_runs(log, many("c", 2, requests=40))
    first = cli("--data-dir", str(data_dir), "aggregate")
    assert first.code == 0, first.err
    assert "c-000" in first.out and "p95_ms" in first.out and "completed" in first.out
    again = cli("--data-dir", str(data_dir), "aggregate", "--incremental", "--json")
    assert json.loads(again.out)["rebuilt"] == [] and json.loads(again.out)["rows"] == 2


def _truncate(raw: bytes) -> bytes:
    return raw[:100]  # the footer is gone: found before anything is read


def _scramble(raw: bytes) -> bytes:
    middle = len(raw) // 2  # the footer is intact: found only while reading the batches
    return raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 300]) + raw[middle + 300 :]


@pytest.mark.parametrize("damage", [_truncate, _scramble], ids=["footer", "past-footer"])
def test_corrupt_file_fails_naming_it_or_is_quarantined(
    log: EventLog,
    data_dir: Path,
    cli: Callable[..., CliResult],
    damage: Callable[[bytes], bytes],
) -> None:
    write_runs(log, many("k", 2, requests=40))
    victim = log.files("requests", run_ids=["k-001"])[0].path
    victim.write_bytes(damage(victim.read_bytes()))
    failed = cli("--data-dir", str(data_dir), "aggregate")
    assert failed.code == 1 and victim.name in failed.err
    skipped = cli("--data-dir", str(data_dir), "aggregate", "--skip-corrupt", "--json")
    assert skipped.code == 0, skipped.err
    payload = json.loads(skipped.out)
    assert len(payload["quarantined"]) == 1 and "quarantined 1" in skipped.err
    assert [r["run_id"] for r in payload["rebuilt"]] == ["k-000"]


def test_no_events_is_bad_input_and_creates_nothing(data_dir: Path) -> None:
    """A mistyped data dir used to "succeed" with empty outputs (and be created)."""
    with pytest.raises(InputError, match="no data directory at"):
        run_aggregate(data_dir, PRICES)
    assert not data_dir.exists()
    data_dir.mkdir()
    with pytest.raises(InputError, match="no events under .*nothing to aggregate"):
        run_aggregate(data_dir, PRICES)
    assert not (data_dir / "results").exists()


def test_incremental_drops_archived_runs_and_rebuilds_foreign_outputs(
    log: EventLog, data_dir: Path
) -> None:
    write_runs(log, many("a", 3, requests=40))
    run_aggregate(data_dir, PRICES)
    for item in log.files("requests", run_ids=["a-001"]):
        item.path.unlink()  # as if archived
    report = run_aggregate(data_dir, PRICES, incremental=True)
    assert report.rebuilt.height == 0 and report.total_rows == 2
    incremental = outputs(data_dir)
    run_aggregate(data_dir, PRICES)
    assert outputs(data_dir) == incremental
    results, _ = (Layout(data_dir).results, Layout(data_dir).timeseries)
    pl.DataFrame({"run_id": ["x"]}).write_parquet(results)  # another version's output
    assert run_aggregate(data_dir, PRICES, incremental=True).mode == "full"
    assert outputs(data_dir) == incremental


def test_many_small_files_read_in_parallel_give_what_one_frame_gives(log: EventLog) -> None:
    """`execute` flushes a file a second: many small files, read per file on threads and joined
    per result before they are reduced, must give exactly what one polars frame of the same
    events gives."""
    write_runs(log, many("small", 3, requests=240, error_rate=0.2), batch_rows=17)
    replay = log.replay("requests")
    assert len(replay.files) > 40
    runs, samples = log.replay("runs").frame, log.replay("samples").frame
    per_file = aggregate(replay.batch_sources(COLUMNS), runs, samples, PRICES)
    one_frame = aggregate(replay.frame, runs, samples, PRICES)
    assert per_file.results.height == 3
    assert per_file.results.equals(one_frame.results)
    assert per_file.timeseries.equals(one_frame.timeseries)
