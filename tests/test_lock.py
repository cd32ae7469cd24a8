"""The data directory's lock: a waiter says whom it waits for (issue item 10), and the lock file
is never someone else's file (issue item 8)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import StoreError, SymlinkRefusedError
from pipeline.store.layout import LOCK_NAME
from pipeline.store.lock import LockHolder, LockOptions, exclusive_lock
from tests.conftest import ROOT, run_pipeline

HOLD = (
    "import sys, time; from pathlib import Path\n"
    "from pipeline.store.lock import LockOptions, exclusive_lock\n"
    "with exclusive_lock(Path(sys.argv[1]), LockOptions(command=sys.argv[2])):\n"
    "    print('held', flush=True); time.sleep(float(sys.argv[3]))\n"
)


@pytest.fixture
def holder(data_dir: Path) -> Iterator[Any]:
    """A real process holding the lock as `pipeline <command>` would, for `seconds`."""
    procs: list[subprocess.Popen[str]] = []

    def start(command: str, seconds: float) -> subprocess.Popen[str]:
        data_dir.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(data_dir), command, str(seconds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def config(tmp_path: Path, timeout: str) -> None:
    (tmp_path / "pipeline.toml").write_text(
        f'lock_timeout = "{timeout}"\n[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n'
    )


def test_the_lock_file_names_its_holder_while_held(data_dir: Path, holder: Any) -> None:
    proc = holder("aggregate", 30)
    assert (data_dir / LOCK_NAME).read_text() == f"{proc.pid} aggregate\n"
    proc.kill()
    proc.wait()
    with exclusive_lock(data_dir):  # the kernel released it; the stale pid is simply replaced
        assert (data_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert (data_dir / LOCK_NAME).read_text() == ""


def test_a_waiter_says_once_whom_it_waits_for_then_gives_up(
    data_dir: Path, holder: Any, tmp_path: Path
) -> None:
    proc = holder("aggregate", 30)
    config(tmp_path, "1s")
    result = run_pipeline("--data-dir", str(data_dir), "profile", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"waiting for the data directory lock held by pid {proc.pid} (pipeline aggregate) ...\n"
        f"error: {data_dir}: another pipeline process (pid {proc.pid}, pipeline aggregate) has "
        "held the data directory's lock for more than 1s; wait for it to finish and try again\n"
    )


def test_a_waiter_goes_on_once_the_holder_is_done(
    data_dir: Path, holder: Any, tmp_path: Path
) -> None:
    proc = holder("compact", 1.5)
    config(tmp_path, "60s")
    started = time.monotonic()
    result = run_pipeline("--data-dir", str(data_dir), "compact", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.5  # it did wait
    waiting = f"waiting for the data directory lock held by pid {proc.pid} (pipeline compact) ..."
    assert result.stderr.splitlines() == [waiting, "nothing to compact"]


def test_quiet_waits_in_silence(data_dir: Path, holder: Any, tmp_path: Path) -> None:
    holder("aggregate", 1.5)
    config(tmp_path, "60s")
    result = run_pipeline("--data-dir", str(data_dir), "-q", "compact", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""


def test_a_holder_that_wrote_nothing_is_reported_as_unknown(data_dir: Path) -> None:
    seen: list[LockHolder] = []
    data_dir.mkdir()
    (data_dir / LOCK_NAME).touch()
    other = os.open(data_dir / LOCK_NAME, os.O_RDONLY)  # held, but (as yet) no pid written
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        options = LockOptions(timeout_s=1.2, on_wait=seen.append)
        with pytest.raises(StoreError, match=r"another pipeline process \(pid unknown\)"):
            with exclusive_lock(data_dir, options):
                pass
    finally:
        os.close(other)
    assert [str(h) for h in seen] == ["an unknown process"]


def test_a_lock_file_hard_linked_to_another_file_is_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("someone else's data\n")
    data_dir.mkdir()
    os.link(outside, data_dir / LOCK_NAME)
    with pytest.raises(StoreError, match="not a plain file"):
        with exclusive_lock(data_dir):
            pass
    assert outside.read_text() == "someone else's data\n"


def test_a_lock_file_symlinked_elsewhere_is_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("someone else's data\n")
    data_dir.mkdir()
    (data_dir / LOCK_NAME).symlink_to(outside)
    with pytest.raises(SymlinkRefusedError):
        with exclusive_lock(data_dir):
            pass
    assert outside.read_text() == "someone else's data\n"


def test_a_fifo_as_lock_file_is_refused_without_hanging(data_dir: Path) -> None:
    data_dir.mkdir()
    os.mkfifo(data_dir / LOCK_NAME)
    with pytest.raises(StoreError, match="not a plain file"):
        with exclusive_lock(data_dir):
            pass
