"""What only an object-store data dir has to promise: URLs, create-only PUTs across processes,
outputs made current by a compare-and-swap, and the CLI end to end, against a local S3 (moto on
127.0.0.1, `tests/s3_server.py`, started by the tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InputError, OutputConflictError, StoreError
from pipeline.store import objstore, pointer
from pipeline.store.eventlog import EventLog
from pipeline.store.layout import RESULTS, TIMESERIES
from pipeline.store.local import LocalStore
from pipeline.store.location import open_store
from pipeline.store.maintenance import compact
from pipeline.store.objstore import ObjectStore
from pipeline.store.outputs import find_output
from stages.aggregate.run import run_aggregate
from tests.cli_proc import run_batch
from tests.conftest import ROOT, S3_BUCKET, S3_SECRET, CliResult, StoreDir
from tests.writer_proc import batch

PRICES: Callable[[str], Any] = lambda model: None  # noqa: E731 - no price: cost columns null


@pytest.fixture
def s3_dir(s3_endpoint: str) -> StoreDir:
    return StoreDir(f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}")


def _events(where: StoreDir, runs: int = 2, size: int = 30) -> None:
    log = EventLog(where.location)
    for n in range(runs):
        log.writer(f"r{n}", "w0").append("requests", batch(f"r{n}", "w0", n, size))


# -- which URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_dir", "says"),
    [
        ("foo://x", "not a folder and not an object-store URL"),
        ("s3:/bucket/p", "not a folder and not an object-store URL"),  # a slash lost
        ("http://example.com/x", "not a folder and not an object-store URL"),
        ("s3://Bad_Bucket/p", "is not a bucket name"),
        ("s3://bucket/a/../b", "prefix part '..'"),
        ("s3://key:secret@bucket/p", "no credentials, port, query or fragment"),
        ("s3://bucket/p?x=1", "no credentials, port, query or fragment"),
    ],
)
def test_a_url_the_store_cannot_serve_exits_2_and_makes_no_folder(
    cli: Callable[..., CliResult], tmp_path: Path, data_dir: str, says: str
) -> None:
    for args in (["--data-dir", data_dir, "execute"], ["aggregate", "--data-dir", data_dir]):
        result = cli(*args)
        assert result.code == 2, result.err
        assert says in result.err and "--data-dir" in result.err
        assert "Traceback" not in result.err and "secret" not in result.err
    assert list(tmp_path.iterdir()) == []  # nothing made into a folder named like the URL


@given(st.sampled_from(["s3", "gs", "az", "S3", "foo", "s3a", "file"]), st.text(max_size=40))
def test_any_url_opens_an_object_store_or_is_refused_never_a_folder(scheme: str, rest: str) -> None:
    text = f"{scheme}://{rest}"
    refused: InputError | None = None
    try:
        store = open_store(text)
    except InputError as exc:
        refused = exc
    if refused is not None:  # one line that names the option
        assert str(refused).startswith("--data-dir ") and "\n" not in str(refused)
        return
    assert isinstance(store, ObjectStore) and not isinstance(store, LocalStore)
    assert scheme.lower() in ("s3", "gs", "az")
    assert ".." not in store.location.split("/") and "@" not in store.location


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=30), c),
        max_leaves=12,
    )
)
def test_a_pointer_is_either_read_or_refused(document: object) -> None:
    raw = json.dumps({"pipeline_outputs": 1, "files": document}).encode()
    try:
        entries = pointer.decode("results", raw)
    except ValueError:
        return
    for name, entry in entries.items():
        assert (
            entry.key
            == f"results/versions/{name.rsplit('.', 1)[0]}-{entry.fingerprint.blake2b}.{name.rsplit('.', 1)[1]}"
        )


def test_plain_http_only_to_a_loopback_endpoint(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.example.com:9000")
    result = cli("--data-dir", f"s3://{S3_BUCKET}/p", "aggregate")
    assert result.code == 2
    assert "AWS_ENDPOINT_URL: plain http is allowed only to a loopback endpoint" in result.err
    monkeypatch.setenv("PIPELINE_DATA_DIR", f"s3://{S3_BUCKET}/p")  # the variable, the same
    assert cli("aggregate").code == 2


def test_a_data_dir_that_holds_nothing_or_cannot_be_reached(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, s3_dir: StoreDir
) -> None:
    empty = cli("--data-dir", str(s3_dir.location), "aggregate")
    assert empty.code == 2 and f"no events under {s3_dir.location}/events" in empty.err
    empty = cli("--data-dir", str(s3_dir.location), "compare")
    assert empty.code == 2 and f"data directory {s3_dir.location} holds nothing" in empty.err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    gone = cli("--data-dir", str(s3_dir.location), "aggregate")
    assert gone.code == 1, gone.err
    assert gone.err.startswith("error: ") and len(gone.err.strip().splitlines()) == 1
    assert S3_SECRET not in gone.err


# -- create-only PUTs --------------------------------------------------------------------------

_RACE = """
import sys, time
from pipeline.store.location import open_store
url, me, start, rounds = sys.argv[1:5]
store = open_store(url)
for n in range(int(rounds)):
    key = f"events/requests/date=2026-01-02/r-w0.abcd-{n:06d}.arrow"
    while time.time() < float(start) + n * 0.2:  # both processes go at the same instant
        pass
    won = store.create(lambda h: h.write(me.encode() * 1000), [key])
    print("won" if won == key else "lost", flush=True)
"""


def test_two_processes_publishing_one_name_exactly_one_wins(s3_dir: StoreDir) -> None:
    import time

    rounds = 10
    start = str(time.time() + 2.0)  # both are past their imports by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(s3_dir.location), me, start, str(rounds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for me in ("a", "b")
    ]
    said = [proc.communicate(timeout=60)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    for n, pair in enumerate(zip(*said, strict=True)):
        assert sorted(pair) == ["lost", "won"], (n, pair)
        winner = "ab"[pair.index("won")]
        key = f"events/requests/date=2026-01-02/r-w0.abcd-{n:06d}.arrow"
        assert s3_dir.read(key) == winner.encode() * 1000  # the loser replaced nothing


def test_a_409_conflict_is_retried_on_the_same_name(s3_dir: StoreDir, s3_endpoint: str) -> None:
    log = EventLog(s3_dir.location)
    out = log.writer("r1", "w0")
    httpx.post(f"{s3_endpoint}/_faults/conflicts?count=2").raise_for_status()
    (where,) = out.append("requests", batch("r1", "w0", 0, 3))
    assert where.endswith(f"r1-{out.name}-000000.arrow")  # not pushed on to the next name
    assert len(s3_dir.keys()) == 1 and log.replay("requests").collect().height == 3
    # The outputs' pointer: a 409 on its swap is a lost round, built again.
    httpx.post(f"{s3_endpoint}/_faults/conflicts?count=1").raise_for_status()
    assert run_aggregate(s3_dir.location, PRICES).total_rows == 1
    assert json.loads(s3_dir.read("results/current.json"))["files"]
    httpx.post(f"{s3_endpoint}/_faults/conflicts?count=99").raise_for_status()
    try:
        with pytest.raises(StoreError, match="kept answering 409"):
            out.append("requests", batch("r1", "w0", 1, 3))
    finally:
        httpx.post(f"{s3_endpoint}/_faults/conflicts?count=0").raise_for_status()


# -- outputs: a pointer swapped by compare-and-swap ----------------------------------------------


def test_outputs_are_content_addressed_and_named_by_one_pointer(s3_dir: StoreDir) -> None:
    _events(s3_dir)
    run_aggregate(s3_dir.location, PRICES)
    keys = s3_dir.keys("results/")
    assert "results/current.json" in keys
    pointer = json.loads(s3_dir.read("results/current.json"))
    assert sorted(pointer["files"]) == [
        "benchmark_results.parquet",
        "sweeps.parquet",
        "timeseries.parquet",
    ]
    for entry in pointer["files"].values():
        assert entry["key"] in keys and len(s3_dir.read(entry["key"])) == entry["size"]
    again = run_aggregate(s3_dir.location, PRICES)  # the same events: the same objects
    assert s3_dir.keys("results/") == keys and again.total_rows == 2


def test_versions_nobody_points_at_are_dropped_after_the_grace(
    s3_dir: StoreDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _events(s3_dir, runs=1)
    run_aggregate(s3_dir.location, PRICES)
    first = set(s3_dir.keys("results/versions/"))
    _events(s3_dir, runs=2)  # another run: other outputs
    run_aggregate(s3_dir.location, PRICES)
    assert first < set(s3_dir.keys("results/versions/"))  # kept within the grace
    monkeypatch.setattr(objstore, "VERSION_GRACE", timedelta(0))
    EventLog(s3_dir.location).writer("r7", "w0").append("requests", batch("r7", "w0", 7, 3))
    run_aggregate(s3_dir.location, PRICES)
    pointer = json.loads(s3_dir.read("results/current.json"))
    named = sorted(entry["key"] for entry in pointer["files"].values())
    assert s3_dir.keys("results/versions/") == named  # only what is current is left
    results = find_output(open_store(s3_dir.location), RESULTS)
    assert results is not None and sorted(results["run_id"]) == ["r0", "r1", "r7"]


def test_a_writer_that_loses_the_swap_builds_again(
    s3_dir: StoreDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another aggregate makes its outputs current while this one builds (after it read the
    pointer): this one's swap fails, it builds again from the events now there, and wins."""
    _events(s3_dir, runs=2)
    store = open_store(s3_dir.location)
    assert isinstance(store, ObjectStore)
    real = store._pointer
    reads = []

    def pointer_then_a_rival(folder: str) -> Any:
        found = real(folder)
        reads.append(found)
        if len(reads) == 1:  # the rival adds a run and aggregates it, between read and swap
            EventLog(s3_dir.location).writer("r9", "w0").append("requests", batch("r9", "w0", 9, 5))
            run_aggregate(s3_dir.location, PRICES)
        return found

    monkeypatch.setattr(store, "_pointer", pointer_then_a_rival)
    report = run_aggregate(store, PRICES)
    assert len(reads) == 2 and reads[0] is None and reads[1] is not None  # one lost swap
    results = find_output(open_store(s3_dir.location), RESULTS)
    assert results is not None and sorted(results["run_id"]) == ["r0", "r1", "r9"]
    assert report.total_rows == 3


def test_a_writer_that_keeps_losing_stops_with_exit_1(
    s3_dir: StoreDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _events(s3_dir, runs=1)
    run_aggregate(s3_dir.location, PRICES)
    store = open_store(s3_dir.location)
    assert isinstance(store, ObjectStore)
    real = store._pointer
    rivals = iter(range(100))

    def always_a_rival(folder: str) -> Any:
        found = real(folder)
        # A rival with other outputs each time (a pointer rewritten with the same bytes keeps
        # its ETag, and swapping it loses nothing: that swap rightly succeeds).
        run = f"x{next(rivals)}"
        EventLog(s3_dir.location).writer(run, "w0").append("requests", batch(run, "w0", 5, 2))
        run_aggregate(s3_dir.location, PRICES)
        return found

    monkeypatch.setattr(objstore, "CAS_ATTEMPTS", 3)
    monkeypatch.setattr(store, "_pointer", always_a_rival)
    with pytest.raises(OutputConflictError, match="other writers replaced these outputs 3 times"):
        run_aggregate(store, PRICES)
    assert OutputConflictError("x").exit_code == 1


def test_a_compaction_during_an_aggregate_makes_it_start_over_not_fail(
    s3_dir: StoreDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lock keeps `compact` away on an object store: it merges and deletes the files an
    aggregate has listed; the aggregate finds one gone, builds again, and counts every event
    once."""
    _events(s3_dir, runs=3)
    store = open_store(s3_dir.location)
    assert isinstance(store, ObjectStore)
    real = store.open_whole
    opened = []

    def compact_first(key: str) -> Any:
        opened.append(key)
        if len(opened) == 1:  # the files are listed and checked; now they are merged away
            assert compact(EventLog(s3_dir.location), before=date(2027, 1, 1))
        return real(key)

    monkeypatch.setattr(store, "open_whole", compact_first)
    report = run_aggregate(store, PRICES)
    assert "_compacted-" not in opened[0] and "_compacted-" in opened[-1]
    results = find_output(store, RESULTS)
    assert results is not None and report.total_rows == 3
    assert sorted(results["run_id"]) == ["r0", "r1", "r2"]
    assert set((results["successful"] + results["failed"]).to_list()) == {30}


def test_concurrent_aggregates_all_finish_with_the_right_results(s3_dir: StoreDir) -> None:
    _events(s3_dir, runs=4)
    location = str(s3_dir.location)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--data-dir", location, "aggregate", "--json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["rows"] == 4
    store = open_store(location)
    results, series = find_output(store, RESULTS), find_output(store, TIMESERIES)
    assert results is not None and series is not None
    assert sorted(results["run_id"]) == ["r0", "r1", "r2", "r3"]
    assert sorted(set(series["run_id"])) == ["r0", "r1", "r2", "r3"]


def test_a_planted_pointer_is_refused_naming_it(
    cli: Callable[..., CliResult], s3_dir: StoreDir
) -> None:
    _events(s3_dir, runs=1)
    run_aggregate(s3_dir.location, PRICES)
    pointer = json.loads(s3_dir.read("results/current.json"))
    entry = pointer["files"]["benchmark_results.parquet"]
    cases = [
        {**entry, "key": "profiles/versions/x.parquet"},  # elsewhere than its digest says
        {**entry, "key": "../../other/x.parquet"},
        {**entry, "blake2b": "0" * 32, "key": entry["key"].replace(entry["blake2b"], "0" * 32)},
    ]
    for bad in cases:
        planted = {**pointer, "files": {**pointer["files"], "benchmark_results.parquet": bad}}
        s3_dir.write("results/current.json", json.dumps(planted).encode())
        result = cli("--data-dir", str(s3_dir.location), "compare")
        assert result.code == 1, result.err
        assert "results/" in result.err and len(result.err.strip().splitlines()) == 1
    s3_dir.write("results/current.json", b"{not json")
    result = cli("--data-dir", str(s3_dir.location), "compare")
    assert result.code == 1 and "not an outputs pointer (not JSON)" in result.err


# -- the CLI end to end -------------------------------------------------------------------------


def _results_without_paths(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("results", "timeseries")}


def test_execute_then_aggregate_on_s3_gives_what_the_same_events_give_locally(
    tmp_path: Path, s3_dir: StoreDir
) -> None:
    url = str(s3_dir.location)
    done = run_batch(
        [
            ["--data-dir", url, "execute", "--json", "--seed", "7", "--workers", "2"],
            ["--data-dir", url, "aggregate", "--json"],
            ["--data-dir", url, "profile", "--json"],
            ["--data-dir", url, "recommend", "--json"],
            ["--data-dir", url, "compare", "--json"],
            ["--data-dir", url, "events", "--last", "--json"],
            ["--data-dir", url, "report", "--out", str(tmp_path / "r.html")],
            ["--data-dir", url, "compact", "--before", "2999-01-01", "--json"],
            ["--data-dir", url, "aggregate", "--json"],
        ],
        cwd=tmp_path,
    )
    for step in done:
        assert step["code"] == 0, step
        assert S3_SECRET not in step["out"] + step["err"]
    summary = json.loads(done[0]["out"])
    assert summary["status"] == "completed" and summary["data_dir"] == url
    # The same events, copied to a local folder, aggregate to byte-identical outputs.
    local = tmp_path / "local"
    for key in s3_dir.keys("events/"):
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(s3_dir.read(key))
    (here,) = run_batch([["--data-dir", str(local), "aggregate", "--json"]], cwd=tmp_path)
    assert here["code"] == 0, here
    there = json.loads(done[-1]["out"])
    assert _results_without_paths(json.loads(here["out"])) == _results_without_paths(there)
    store = open_store(url)
    for key in (RESULTS, TIMESERIES):
        assert store.read_output(key) == (local / key).read_bytes()
    frame = find_output(store, RESULTS)
    assert frame is not None and frame.height == 2  # 2 mock targets, 20 attempts each
    assert set((frame["successful"] + frame["failed"]).to_list()) == {20}
    assert pl.read_parquet(local / RESULTS).equals(frame)
    assert (tmp_path / "r.html").stat().st_size > 0
    assert not [p for p in tmp_path.rglob("*") if "s3:" in str(p)]  # no folder named like it
    for key in s3_dir.keys():  # secrets never reach the store
        assert S3_SECRET.encode() not in s3_dir.read(key)


def test_an_execute_into_a_missing_bucket_exits_1_with_one_line(
    tmp_path: Path, s3_endpoint: str
) -> None:
    (step,) = run_batch(
        [["--data-dir", "s3://no-such-bucket-here/x", "execute", "--no-preflight"]], cwd=tmp_path
    )
    assert step["code"] == 1, step
    assert "s3://no-such-bucket-here/x/" in step["err"] and "Traceback" not in step["err"]
    assert S3_SECRET not in step["err"] and os.environ["AWS_ACCESS_KEY_ID"] not in step["err"]
