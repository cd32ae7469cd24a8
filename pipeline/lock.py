"""An exclusive lock on the data directory for derived stages (one writer of outputs at a time).

A second process waits for the lock, bounded, then fails with a message naming the holder.
`flock` is released by the kernel when the holder dies, so a crash never leaves a stale lock.

The lock file is opened with O_NOFOLLOW (and the data directory's own descriptor), and must be a
regular file with a single link: a `.lock` planted as a symlink or a hard link to someone else's
file would otherwise have its holder truncate that file. A lock file that cannot be opened or
written (a full or read-only disk) is a one-line StoreError naming it.

Whoever gets the lock first sweeps `DATA/.staging` of temp files no live writer holds
(`fsutil.sweep_staging`): every derived stage, `compact` and `archive` pass here, so what a
killed or failed write left behind goes at the next one.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import LockTimeoutError, StoreError
from pipeline.fsutil import open_file, store_error, sweep_staging

__all__ = ["LOCK_NAME", "exclusive_lock"]

LOCK_NAME = ".lock"


def _open_lock_file(data_dir: Path) -> int:
    path = data_dir / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK  # O_NONBLOCK: a planted FIFO cannot hang us
    fd = open_file(data_dir, path, flags)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise StoreError(
            f"{path} is not a plain file (a hard link or a special file); refusing to write to "
            "it: remove it and run again"
        )
    return fd


@contextmanager
def exclusive_lock(data_dir: Path, timeout_s: float = 30.0, poll_s: float = 0.05) -> Iterator[None]:
    fd = _open_lock_file(data_dir)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise LockTimeoutError(
                        f"{data_dir}: another pipeline process (pid {holder}) has held the data "
                        f"directory's lock for more than {timeout_s:g}s; wait for it to finish "
                        "and try again"
                    ) from None
                time.sleep(poll_s)
        try:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError as exc:
                raise store_error(data_dir / LOCK_NAME, exc) from exc
            sweep_staging(data_dir)
            yield
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # the kernel drops the lock below anyway; the pid left there is stale
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
