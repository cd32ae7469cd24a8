"""Durable, confined file primitives for everything written under the data directory.

Durable: a file is written whole under a staging directory, fsynced, then published by hard link
(which never replaces a name) or by rename (which replaces one atomically), and the directory is
fsynced.

Confined: a path below a *root* (the data directory) is reached one component at a time from a
descriptor of the root, each directory opened with O_NOFOLLOW, and the operation itself is done
relative to the last one (openat, linkat, renameat, unlinkat). So a symbolic link planted anywhere
below the root (`.staging`, a table folder, a partition, `results/`, `quarantine/`) raises
SymlinkRefusedError naming it, and nothing is written, truncated, renamed or deleted outside the
root: there is no separate check that a link swapped in afterwards could get past. The root
itself is opened following links, once per operation: a data directory that is a link its user
made on purpose works.

Failures: every OSError of these operations becomes a one-line StoreError, `<path>: <cause>` (a
full disk, a read-only file system, a permission denied), never a traceback.

Staged files are provably owned while alive: the writer holds an exclusive `flock` on its temp
file from the moment it exists until after it is published or removed, and the kernel drops the
lock if the writer dies. `sweep_staging` removes the temp files nobody holds: those a killed or
failed write left behind. A live writer's file is never removed (`_create_locked` closes the one
window, between creating a file and locking it).

Paths stay plain, so an object-store backend can map "publish" to a single create-only PUT.
"""

from __future__ import annotations

import fcntl
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import StoreError, SymlinkRefusedError

__all__ = [
    "STAGING_DIR",
    "TMP_SUFFIX",
    "Staged",
    "dir_entries",
    "fsync_dir",
    "kind_of",
    "open_dir",
    "open_file",
    "publish_new",
    "remove_dir",
    "rename_below",
    "replace_atomic",
    "stage",
    "staged_file",
    "store_error",
    "sweep_staging",
    "unlink_below",
]

STAGING_DIR = ".staging"
TMP_SUFFIX = ".tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def store_error(path: Path, exc: OSError) -> StoreError:
    """The one-line message of a failed file operation: the path, then the cause."""
    return StoreError(f"{path}: {exc.strerror or exc}")


def _below(root: Path, path: Path) -> tuple[str, ...]:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise StoreError(f"{path} is not inside {root}") from None
    if ".." in parts:
        raise StoreError(f"{path} leaves {root}")
    return parts


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _entry_kind(entry: os.DirEntry[str]) -> str:
    """As `_kind`, from the directory entry's type (no stat call where the file system gives it)."""
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    return "file" if entry.is_file(follow_symlinks=False) else "other"


def _refuse_link(parent: int, name: str, path: Path) -> None:
    """Raise SymlinkRefusedError if `name` (in directory `parent`) is a symbolic link."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise SymlinkRefusedError(path)


def _fsync(fd: int, path: Path) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise store_error(path, exc) from exc


def _open_root(root: Path, create: bool) -> int:
    try:
        if create and not root.is_dir():
            # The root and what is above it are the user's: followed, made with their parents,
            # each parent fsynced so the new entries survive a crash.
            missing = []
            current = root
            while not current.exists():
                missing.append(current)
                current = current.parent
            for directory in reversed(missing):
                try:
                    directory.mkdir()
                except FileExistsError:
                    pass
                fd = os.open(directory.parent, _DIR_FLAGS)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        if create:
            raise StoreError(f"{root}: could not be created") from None
        raise
    except OSError as exc:
        raise store_error(root, exc) from exc


def _open_child(parent: int, name: str, path: Path, create: bool) -> int:
    for _ in range(3):  # made (or removed) by another process meanwhile: look again
        try:
            return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            _refuse_link(parent, name, path)
            raise store_error(path, exc) from exc
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        except FileExistsError:
            continue
        except OSError as exc:
            raise store_error(path, exc) from exc
        _fsync(parent, path.parent)  # the new entry survives a crash
    raise StoreError(f"{path}: could not be created (it keeps disappearing)")


def _open_below(root: Path, path: Path, create: bool) -> int:
    """A descriptor of the directory `path` (the root or below it), which the caller closes."""
    parts = _below(root, path)
    fd = _open_root(root, create)
    current = root
    try:
        for name in parts:
            current = current / name
            child = _open_child(fd, name, current, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def open_dir(root: Path, path: Path, *, create: bool = False) -> Iterator[int]:
    """A directory descriptor of `path`, reached from `root` without following any link below it.

    A missing directory raises FileNotFoundError (callers that can do without it catch that);
    with `create`, missing directories are made, each parent fsynced.
    """
    fd = _open_below(root, path, create)
    try:
        yield fd
    finally:
        os.close(fd)


def fsync_dir(root: Path, path: Path) -> None:
    with open_dir(root, path) as fd:
        _fsync(fd, path)


def open_file(root: Path, path: Path, flags: int, mode: int = 0o644) -> int:
    """Open the file `path` below `root`, never through a link (O_NOFOLLOW on it, and on every
    directory on the way); the caller closes the descriptor."""
    with open_dir(root, path.parent, create=bool(flags & os.O_CREAT)) as parent:
        try:
            return os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        except OSError as exc:
            _refuse_link(parent, path.name, path)
            if isinstance(exc, FileNotFoundError):
                raise
            raise store_error(path, exc) from exc


def kind_of(root: Path, path: Path) -> str | None:
    """What is at `path` (below `root`), without following it: "file", "dir", "link", "other",
    or None when nothing is there."""
    try:
        with open_dir(root, path.parent) as parent:
            mode = os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise store_error(path, exc) from exc
    return _kind(mode)


def dir_entries(root: Path, path: Path) -> list[tuple[str, str]]:
    """The (name, kind) of every entry of directory `path`, sorted by name; kinds as `kind_of`.

    FileNotFoundError when the directory is missing."""
    with open_dir(root, path) as fd:
        try:
            with os.scandir(fd) as entries:
                found = [(entry.name, _entry_kind(entry)) for entry in entries]
        except OSError as exc:
            raise store_error(path, exc) from exc
    return sorted(found)


def unlink_below(root: Path, path: Path) -> bool:
    """Delete the file (or link) `path`, never through a linked directory; False if it was gone.

    The directory is not fsynced here: a caller deleting many files fsyncs it once."""
    try:
        with open_dir(root, path.parent) as parent:
            os.unlink(path.name, dir_fd=parent)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise store_error(path, exc) from exc
    return True


def rename_below(root: Path, source: Path, dest: Path) -> None:
    """Move `source` to `dest` (both below `root`; dest's parents are made), in one rename."""
    with open_dir(root, source.parent) as src, open_dir(root, dest.parent, create=True) as dst:
        try:
            os.rename(source.name, dest.name, src_dir_fd=src, dst_dir_fd=dst)
        except OSError as exc:
            raise store_error(source, exc) from exc
        _fsync(dst, dest.parent)
        _fsync(src, source.parent)


def remove_dir(root: Path, path: Path) -> None:
    """Remove the empty directory `path` (below `root`)."""
    with open_dir(root, path.parent) as parent:
        try:
            os.rmdir(path.name, dir_fd=parent)
        except OSError as exc:
            raise store_error(path, exc) from exc
        _fsync(parent, path.parent)


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
    dir_fd = _open_below(root, staging, create=True)
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
        _fsync(parent, final.parent)
    return True


def replace_atomic(tmp: Staged, final: Path) -> None:
    """Replace `final` with `tmp` in one step (readers see the old or the new file, never half).

    A link at `final` is replaced itself, never followed."""
    with open_dir(tmp.root, final.parent, create=True) as parent:
        try:
            os.replace(tmp.name, final.name, src_dir_fd=tmp.dir_fd, dst_dir_fd=parent)
        except OSError as exc:
            raise store_error(final, exc) from exc
        _fsync(parent, final.parent)


def sweep_staging(root: Path) -> int:
    """Remove the temp files in `root/.staging` that no live writer holds; return how many.

    A writer holds its temp file's flock for the file's whole life, so a lock we can take is
    proof the writer is gone (killed, or failed without cleaning up). The name is removed only
    while we hold the lock and only if it still is the file we locked. Anything else (a live
    writer's file, a link, a directory, a file we may not remove) is left alone.
    """
    staging = root / STAGING_DIR
    try:
        dir_fd = _open_below(root, staging, create=False)
    except FileNotFoundError:
        return 0
    removed = 0
    try:
        try:
            with os.scandir(dir_fd) as entries:
                names = [
                    e.name
                    for e in entries
                    if e.name.endswith(TMP_SUFFIX) and e.is_file(follow_symlinks=False)
                ]
        except OSError as exc:
            raise store_error(staging, exc) from exc
        for name in names:
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
                )
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
            _fsync(dir_fd, staging)
    finally:
        os.close(dir_fd)
    return removed
