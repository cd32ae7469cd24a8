"""A compaction never hides or deletes an event published after it (issue item 1).

The bug: a new writer for the same run and writer name (a second pair's worker processes, a
restarted process) started its sequence again at 0 and, once `compact` had deleted the files it
merged, published under a name the compacted file still listed as replaced: the publish
succeeded, replay never showed it, and the next `compact` deleted it. These tests stage exactly
that, through the API and through the real CLI processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from pipeline.store.eventlog import EventLog
from pipeline.store.lock import exclusive_lock
from pipeline.store.maintenance import compact
from tests.conftest import StoreDir, mock_server_process, run_pipeline
from tests.writer_proc import batch


def visible(log: EventLog) -> int:
    return log.replay("requests").collect().height


def test_a_new_writer_after_a_compaction_publishes_visible_files(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    first = log.writer("r1", "w0")
    first.append("requests", batch("r1", "a", 0, 100))
    first.append("requests", batch("r1", "a", 1, 100))
    assert len(compact(log)) == 1  # the two files are merged, then deleted
    again = log.writer("r1", "w0")  # the same run and writer name: a restarted process or pair
    again.append("requests", batch("r1", "b", 0, 100))
    again.append("requests", batch("r1", "b", 1, 100))
    assert visible(log) == 400
    compact(log)
    assert visible(log) == 400
    (key,) = store_dir.keys()
    assert key.startswith("events/requests/date=2026-01-02/_compacted-")


def test_one_shot_appends_after_a_compaction_stay_visible(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    for number in range(2):
        log.append("requests", batch("r1", "a", number, 50), run_id="r1")
    compact(log)
    for number in range(2):
        log.append("requests", batch("r1", "b", number, 50), run_id="r1")
    assert visible(log) == 200
    compact(log)
    assert visible(log) == 200


def test_file_names_of_one_run_never_repeat_across_writers(store_dir: StoreDir) -> None:
    log = EventLog(store_dir.location)
    names = set()
    for _ in range(20):
        log.writer("r1", "w0").append("requests", batch("r1", "w0", 0, 1))
        (key,) = store_dir.keys()
        names.add(key.rsplit("/", 1)[-1])
        store_dir.delete(key)  # even a deleted name is never given out again
    assert len(names) == 20
    assert all(n.startswith("r1-w0.") and n.endswith("-000000.arrow") for n in names)


@pytest.fixture
def mock_server_url() -> Iterator[str]:
    """`pipeline mock-server` in its own process; ~30 ms a request (8 tokens at 1,000/s)."""
    with mock_server_process("--latency", "20ms", "--token-rate", "1000") as root:
        yield root + "/v1"


def _finished_pairs(log: EventLog) -> int:
    runs = log.replay("runs").collect()  # nothing is deleted meanwhile: we hold the lock
    return runs.filter(pl.col("kind") == "finished").height


@pytest.mark.slow
def test_compact_while_the_second_pairs_workers_start_loses_nothing(
    tmp_path: Path, mock_server_url: str
) -> None:
    """`execute --workers 2` over two targets, and `compact` just after the first pair ends."""
    targets = "".join(
        f'[[targets]]\nname = "{name}"\nprovider = "openai-compatible"\nmodel = "m"\n'
        f'base_url = "{mock_server_url}"\n'
        for name in ("a", "b")
    )
    (tmp_path / "pipeline.toml").write_text(
        'lock_timeout = "120s"\n' + targets + '[[scenarios]]\nname = "s"\ntest_prompts = ["x"]\n'
        "expected_operations = 300\nconcurrency_level = 4\nmax_tokens = 8\n"
        "streaming_required = true\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    log = EventLog(data)
    tomorrow = ["compact", "--before", "2999-01-01"]  # today's partition too: the run is today
    compact_cmd = [sys.executable, "-m", "pipeline", "--data-dir", str(data), *tomorrow]
    execute_cmd = [sys.executable, "-m", "pipeline", "--data-dir", str(data), "execute"]
    execute_cmd += ["--workers", "2", "--scenario", "s", "--json"]
    # `compact` is started first and kept waiting on the lock (execute does not take it), so it
    # runs the moment it is let go: right after the first pair, as the second pair's workers start.
    with exclusive_lock(data):
        waiting = subprocess.Popen(
            compact_cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        run = subprocess.Popen(
            execute_cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while _finished_pairs(log) < 1:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the first pair never finished"
            time.sleep(0.02)
    _, compact_err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, compact_err
    assert f"waiting for the data directory lock held by pid {os.getpid()} ..." in compact_err
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    acknowledged = sum(pair["requests"] for pair in json.loads(out)["results"])
    assert acknowledged == 600
    assert visible(log) == acknowledged
    assert run_pipeline("--data-dir", str(data), *tomorrow, cwd=tmp_path).returncode == 0
    frame = log.replay("requests").collect()
    assert frame.height == acknowledged == frame["event_id"].n_unique()
    assert sorted(frame.group_by("target").len().rows()) == [("a", 300), ("b", 300)]
