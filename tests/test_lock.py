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
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[3])) if sys.argv[3] != 'stdin' else sys.stdin.readline()\n"
)


@pytest.fixture
def holder(data_dir: Path) -> Iterator[Any]:
    """A real process holding the lock as `pipeline <command>` would, for `seconds` or (None)
    until the test writes a line to its stdin."""
    procs: list[subprocess.Popen[str]] = []

    def start(command: str, seconds: float | None = None) -> subprocess.Popen[str]:
        data_dir.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(data_dir), command, str(seconds or "stdin")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
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
        for pipe in (proc.stdin, proc.stdout):
            if pipe:
                pipe.close()


def release(holder: subprocess.Popen[str]) -> None:
    """Let a holder started without `seconds` go; its lock is free once it has exited."""
    assert holder.stdin is not None
    holder.stdin.write("done\n")
    holder.stdin.flush()
    assert holder.wait(timeout=30) == 0


def waiter(data_dir: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`pipeline --data-dir DATA ARGS` in a real process, its stderr readable as it comes."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--data-dir", str(data_dir), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def polls_for_the_lock(pid: int, lock: Path) -> bool:
    """Process `pid` has the lock file open and sleeps between two tries to take it (Linux
    /proc: an open file descriptor on it, and a wait channel in nanosleep): it found it taken."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        opened = any(os.readlink(fd) == str(lock) for fd in fds.iterdir())
        channel = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:  # the process is gone, or a descriptor closed while we looked
        return False
    return opened and ("nanosleep" in channel or channel == "0")  # "0": a kernel that hides it


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
    """The holder lets go only once the waiter has said whom it waits for: the waiter saw the
    lock taken (however slowly it started), and went on when it was free."""
    proc = holder("compact")
    config(tmp_path, "60s")
    waiting = waiter(data_dir, tmp_path, "compact")
    assert waiting.stderr is not None
    said = waiting.stderr.readline()
    assert (
        said
        == f"waiting for the data directory lock held by pid {proc.pid} (pipeline compact) ...\n"
    )
    assert waiting.poll() is None  # still waiting
    release(proc)
    _, rest = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, rest
    assert rest.splitlines() == ["nothing to compact"]


def test_quiet_waits_in_silence(data_dir: Path, holder: Any, tmp_path: Path) -> None:
    """The holder lets go only once the quiet waiter is seen polling for the lock."""
    proc = holder("aggregate")
    config(tmp_path, "60s")
    quiet = waiter(data_dir, tmp_path, "-q", "compact")
    deadline = time.monotonic() + 60
    while not polls_for_the_lock(quiet.pid, data_dir.resolve() / LOCK_NAME):
        assert quiet.poll() is None, quiet.communicate()
        assert time.monotonic() < deadline, "the waiter never tried to take the lock"
        time.sleep(0.01)
    release(proc)
    _, err = quiet.communicate(timeout=60)
    assert quiet.returncode == 0 and err == ""


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
