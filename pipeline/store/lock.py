"""An exclusive lock on the data directory for derived stages and housekeeping (one writer of
outputs at a time).

A second process waits for the lock, bounded; if it cannot have it at once it says so once
(`LockOptions.on_wait`, which the CLI prints: the store itself never prints), then fails with a
message naming the holder. The holder writes its pid and command into the lock file once it holds
the lock (`1234 aggregate`), so a waiter can say who it waits for. `flock` is released by the
kernel when the holder dies, so a crash never leaves a stale lock.

The lock file is opened with O_NOFOLLOW (and the data directory's own descriptor), and must be a
regular file with a single link: a `.lock` planted as a symlink or a hard link to someone else's
file would otherwise have its holder truncate that file.

Whoever gets the lock first sweeps `DATA/.staging` of temp files no live writer holds
(`staging.sweep_staging`): every derived stage and `compact` passes here, so what a killed or
failed write left behind goes at the next one.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import LockTimeoutError, StoreError
from pipeline.store.fsutil import open_file, store_error
from pipeline.store.layout import Layout, require_data_dir
from pipeline.store.staging import sweep_staging

__all__ = ["DEFAULT_LOCK", "LockHolder", "LockOptions", "exclusive_lock"]
_UNKNOWN_AFTER_S = 1.0
"""How long a waiter waits for the holder's pid to appear (written just after it got the lock)
before saying it waits for an unknown process."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock, as its lock file says (None: not written yet, or not a pipeline)."""

    pid: int | None
    command: str | None

    @classmethod
    def parse(cls, text: str) -> LockHolder:
        words = text.split(None, 1)
        if not words or not words[0].isdigit():
            return cls(None, None)
        return cls(int(words[0]), words[1].strip() if len(words) > 1 else None)

    def __str__(self) -> str:
        if self.pid is None:
            return "an unknown process"
        return f"pid {self.pid}" + (f" (pipeline {self.command})" if self.command else "")


@dataclass(frozen=True)
class LockOptions:
    timeout_s: float = 30.0
    command: str = ""
    """Written into the lock file beside the pid, so a waiter can say what it waits for."""
    on_wait: Callable[[LockHolder], None] | None = None
    """Called once when the lock is not free at once, with its holder."""
    poll_s: float = 0.05


DEFAULT_LOCK = LockOptions()


def _open_lock_file(data_dir: Path) -> int:
    path = Layout(data_dir).lock
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


def _holder(fd: int) -> LockHolder:
    try:
        return LockHolder.parse(os.pread(fd, 256, 0).decode(errors="replace"))
    except OSError:
        return LockHolder(None, None)


def _acquire(fd: int, data_dir: Path, options: LockOptions) -> None:
    started = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            raise store_error(Layout(data_dir).lock, exc) from exc
        holder = _holder(fd)
        waited = time.monotonic() - started
        if not told and (holder.pid is not None or waited >= _UNKNOWN_AFTER_S):
            told = True
            if options.on_wait is not None:
                options.on_wait(holder)
        if waited >= options.timeout_s:
            who = "pid unknown" if holder.pid is None else f"pid {holder.pid}"
            if holder.command:
                who += f", pipeline {holder.command}"
            raise LockTimeoutError(
                f"{data_dir}: another pipeline process ({who}) has held the data directory's "
                f"lock for more than {options.timeout_s:g}s; wait for it to finish and try again"
            )
        time.sleep(options.poll_s)


@contextmanager
def exclusive_lock(data_dir: Path, options: LockOptions = DEFAULT_LOCK) -> Iterator[None]:
    """Hold the data directory's lock (waiting as `options` says); sweep staging once held.
    The directory must exist (the derived stages and housekeeping never create it)."""
    require_data_dir(data_dir)
    fd = _open_lock_file(data_dir)
    try:
        _acquire(fd, data_dir, options)
        try:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {options.command}".strip().encode() + b"\n", 0)
            except OSError as exc:
                raise store_error(Layout(data_dir).lock, exc) from exc
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
