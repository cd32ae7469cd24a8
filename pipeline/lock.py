"""An exclusive lock on the data directory for derived stages (one writer of outputs at a time).

A second process waits for the lock, bounded, then fails with a message naming the holder.
`flock` is released by the kernel when the holder dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import LockTimeoutError

__all__ = ["LOCK_NAME", "exclusive_lock"]

LOCK_NAME = ".lock"


@contextmanager
def exclusive_lock(data_dir: Path, timeout_s: float = 30.0, poll_s: float = 0.05) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
