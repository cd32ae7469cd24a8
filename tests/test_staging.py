"""Temp files in DATA/.staging: removed once provably abandoned, never while alive (issue item 6).

A writer holds an flock on its temp file for the file's whole life; a sweep removes only the
temp files whose lock it can take. The writers here are real processes killed with SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pipeline.errors import StoreError
from pipeline.store.eventlog import EventLog, conform, write_ipc
from pipeline.store.layout import STAGING_DIR
from pipeline.store.staging import publish_new, stage, staged_file, sweep_staging
from schemas import TABLES
from tests.conftest import ROOT, run_pipeline
from tests.stager_proc import PUBLISHED
from tests.writer_proc import batch


def temps(data: Path) -> list[Path]:
    return sorted((data / STAGING_DIR).glob("*.tmp"))


@pytest.fixture
def stager(data_dir: Path) -> Iterator[Any]:
    """Start `tests.stager_proc` in a mode; every process started is killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.stager_proc", str(data_dir), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == mode
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _plant_event_file(data_dir: Path) -> None:
    """One published event file, written by hand (a writer's first append would sweep too)."""
    table = conform(TABLES["requests"], batch("r1", "w0", 0, 2))
    partition = EventLog(data_dir).partition_dir("requests", "2026-01-02")
    partition.mkdir(parents=True)
    with open(partition / "r1-w0.00000000-000000.arrow", "wb") as handle:
        write_ipc(table, handle)


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("sweeper", ["writer", "compact", "aggregate"])
def test_a_temp_file_of_a_writer_killed_mid_write_is_removed(
    data_dir: Path, stager: Any, sweeper: str, tmp_path: Path
) -> None:
    kill(stager("writing"))
    (left,) = temps(data_dir)
    assert left.stat().st_size == 65536  # half a file, left by SIGKILL
    if sweeper == "writer":  # what execute's writers do on their first append
        EventLog(data_dir).writer("r1").append("requests", batch("r1", "w0", 0, 2))
    else:
        _plant_event_file(data_dir)  # aggregate refuses a log with no events at all
        result = run_pipeline("--data-dir", str(data_dir), sweeper, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert temps(data_dir) == []


def test_a_live_writers_temp_file_is_never_removed(data_dir: Path, stager: Any) -> None:
    alive = stager("writing")
    (mine,) = temps(data_dir)
    for _ in range(3):
        assert sweep_staging(data_dir) == 0
        EventLog(data_dir).writer("r1").append("requests", batch("r1", "w0", 0, 2))
    assert temps(data_dir) == [mine] and alive.poll() is None
    kill(alive)
    assert sweep_staging(data_dir) == 1 and temps(data_dir) == []


def test_a_writer_killed_between_publish_and_cleanup_loses_nothing(
    data_dir: Path, stager: Any
) -> None:
    kill(stager("published"))
    (left,) = temps(data_dir)
    assert left.stat().st_nlink == 2  # the temp name and the published one: one file
    assert sweep_staging(data_dir) == 1 and temps(data_dir) == []
    assert (data_dir / PUBLISHED).stat().st_nlink == 1
    assert EventLog(data_dir).replay("requests").collect().height == 5


def test_a_file_swept_between_creation_and_lock_is_made_again(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one window a sweeper has: after the writer created its temp file, before it locked
    it. The writer finds its name gone once locked, and starts over with a new file."""
    real_flock = fcntl.flock
    swept: list[str] = []

    def sweeper_first(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not swept:  # the writer's (blocking) lock
            (victim,) = temps(data_dir)
            swept.append(victim.name)
            victim.unlink()  # what a sweeper that won the race does
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", sweeper_first)
    with staged_file(data_dir, data_dir / STAGING_DIR, lambda h: h.write(b"whole")) as tmp:
        assert tmp.name != swept[0] and tmp.path.read_bytes() == b"whole"
        assert publish_new(tmp, data_dir / "out" / "f")
    assert (data_dir / "out" / "f").read_bytes() == b"whole" and temps(data_dir) == []


def test_a_failed_write_removes_its_temp_file(data_dir: Path) -> None:
    def full_disk(handle: BinaryIO) -> None:
        handle.write(b"x" * 10)
        raise OSError(28, "No space left on device")

    with pytest.raises(StoreError, match=r"\.staging/[0-9a-f]{32}\.tmp: No space left on device$"):
        stage(data_dir, data_dir / STAGING_DIR, full_disk)
    with pytest.raises(ZeroDivisionError):
        stage(data_dir, data_dir / STAGING_DIR, lambda h: 1 / 0)
    assert temps(data_dir) == []


def test_other_things_in_staging_are_left_alone(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / STAGING_DIR / "sub.tmp").mkdir(parents=True)
    outside = tmp_path / "outside.tmp"
    outside.write_text("not ours")
    (data_dir / STAGING_DIR / "link.tmp").symlink_to(outside)
    (data_dir / STAGING_DIR / "notes.txt").write_text("not a temp file")
    assert sweep_staging(data_dir) == 0
    assert sorted(p.name for p in (data_dir / STAGING_DIR).iterdir()) == [
        "link.tmp",
        "notes.txt",
        "sub.tmp",
    ]
    assert outside.read_text() == "not ours"
