"""Staged files: written whole, fsynced, then published; owned by their writer while alive.

Durable: a file is written whole under a staging directory, fsynced, then published by hard link
(which never replaces a name) or by rename (which replaces one atomically), and the directory is
fsynced. Every step goes through `pipeline.store.fsutil`'s confined operations (no link below the root
is followed; every OSError is a one-line StoreError), and a temp file is removed by its writer
whatever fails after it was created.

Provably owned: the writer holds an exclusive `flock` on its temp file from the moment it exists
until after it is published or removed, and the kernel drops the lock if the writer dies.
`sweep_staging` removes the temp files nobody holds: those a killed or failed write left behind.
A live writer's file is never removed (`_create_locked` closes the one window, between creating
a file and locking it).

Paths stay plain, so an object-store backend can map "publish" to a single create-only PUT.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import StoreError
from pipeline.store.fsutil import fsync_fd, open_dir, store_error
from pipeline.store.layout import Layout

__all__ = [
    "TMP_SUFFIX",
    "Staged",
    "publish_new",
    "replace_atomic",
    "stage",
    "staged_file",
    "sweep_staging",
]

TMP_SUFFIX = ".tmp"


@dataclass
class Staged:
    """A complete, fsynced temp file under a staging directory, flock-held until `close`."""

    root: Path
    path: Path
    dir_fd: int
    """The staging directory (every publish is relative to it, so a link swapped in for it
    afterwards changes nothing)."""
    fd: int

    @property
    def name(self) -> str:
        return self.path.name

    def close(self) -> None:
        """Remove the temp name if it still is this file, then release the lock: in that order,
        so a sweeper that gets the lock finds the name gone. Never raises (it runs while another
        error propagates): a name it could not remove is swept later."""
        if self.fd < 0:
            return
        try:
            if _same_file(self.dir_fd, self.name, self.fd):
                os.unlink(self.name, dir_fd=self.dir_fd)
        except OSError:
            pass  # renamed into place already, or swept after the link; or a read-only disk
        finally:
            os.close(self.fd)
            os.close(self.dir_fd)
            self.fd = self.dir_fd = -1


def _same_file(dir_fd: int, name: str, fd: int) -> bool:
    """Whether `name` in `dir_fd` is the file open as `fd` (False if the name is gone)."""
    try:
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _create_locked(root: Path, staging: Path, dir_fd: int) -> Staged:
    """Create a new temp file and lock it.

    The one race with `sweep_staging`: it can open and lock a file in the instant between its
    creation and our flock, and remove it. So, once our flock is granted, the name must still be
    our file; if it is not, it was swept: make another. After that check the file is ours: a
    sweeper can no longer get the lock, and nobody else uses the name (uuid4)."""
    for _ in range(100):
        path = staging / f"{uuid.uuid4().hex}{TMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path.name, flags, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise store_error(path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(dir_fd, path.name, fd):
                return Staged(root, path, dir_fd, fd)
        except OSError as exc:
            os.close(fd)
            raise store_error(path, exc) from exc
        os.close(fd)
    raise StoreError(
        f"{staging}: temp files keep disappearing from it; is something removing them?"
    )


def stage(root: Path, staging: Path, write: Callable[[BinaryIO], object]) -> Staged:
    """Write a complete, fsynced file under `staging` (below `root`); the caller closes it.

    A failure while writing (a full disk) removes the temp file and raises a StoreError naming it.
    """
    with open_dir(root, staging, create=True) as fd:
        dir_fd = os.dup(fd)  # kept by the Staged, for publishing relative to it
    try:
        staged = _create_locked(root, staging, dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    try:
        with os.fdopen(os.dup(staged.fd), "wb") as handle:  # a dup: the flock stays on `fd`
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        staged.close()
        raise store_error(staged.path, exc) from exc
    except BaseException:
        staged.close()
        raise
    return staged


@contextmanager
def staged_file(root: Path, staging: Path, write: Callable[[BinaryIO], object]) -> Iterator[Staged]:
    """`stage`, closed on exit whatever happens (so no temp file outlives a failed publish)."""
    staged = stage(root, staging, write)
    try:
        yield staged
    finally:
        staged.close()


def publish_new(tmp: Staged, final: Path) -> bool:
    """Publish `tmp` at `final` only if nothing is there (hard link); False if the name is taken.

    The temp name stays until `tmp` is closed: a crash in between leaves a second link that the
    next sweep removes, never a missing file."""
    with open_dir(tmp.root, final.parent, create=True) as parent:
        try:
            os.link(
                tmp.name,
                final.name,
                src_dir_fd=tmp.dir_fd,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except FileExistsError:
            return False
        except OSError as exc:
            raise store_error(final, exc) from exc
        fsync_fd(parent, final.parent)
    return True


def replace_atomic(tmp: Staged, final: Path) -> None:
    """Replace `final` with `tmp` in one step (readers see the old or the new file, never half).

    A link at `final` is replaced itself, never followed."""
    with open_dir(tmp.root, final.parent, create=True) as parent:
        try:
            os.replace(tmp.name, final.name, src_dir_fd=tmp.dir_fd, dst_dir_fd=parent)
        except OSError as exc:
            raise store_error(final, exc) from exc
        fsync_fd(parent, final.parent)


def sweep_staging(root: Path) -> int:
    """Remove the temp files in `root/.staging` that no live writer holds; return how many.

    A writer holds its temp file's flock for the file's whole life, so a lock we can take is
    proof the writer is gone (killed, or failed without cleaning up). The name is removed only
    while we hold the lock and only if it still is the file we locked. Anything else (a live
    writer's file, a link, a directory, a file we may not remove) is left alone.
    """
    staging = Layout(root).staging
    try:
        with open_dir(root, staging) as dir_fd:
            return _sweep(staging, dir_fd)
    except FileNotFoundError:
        return 0


def _sweep(staging: Path, dir_fd: int) -> int:
    try:
        with os.scandir(dir_fd) as entries:
            names = [
                e.name
                for e in entries
                if e.name.endswith(TMP_SUFFIX) and e.is_file(follow_symlinks=False)
            ]
    except OSError as exc:
        raise store_error(staging, exc) from exc
    removed = 0
    for name in names:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            continue  # gone already (published and closed), or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(dir_fd, name, fd):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
        except OSError:
            continue  # held by a live writer (BlockingIOError), or not ours to remove
        finally:
            os.close(fd)
    if removed:
        fsync_fd(dir_fd, staging)
    return removed
