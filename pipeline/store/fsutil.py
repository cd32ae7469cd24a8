"""Confined file operations: nothing below the data directory is reached through a symlink.

A path below a *root* (the data directory) is reached one component at a time from a
descriptor of the root, each directory opened with O_NOFOLLOW, and the operation itself is done
relative to the last one (openat, linkat, renameat, unlinkat). So a symbolic link planted anywhere
below the root (`.staging`, a table folder, a partition, `results/`, `quarantine/`) raises
SymlinkRefusedError naming it, and nothing is written, truncated, renamed or deleted outside the
root: there is no separate check that a link swapped in afterwards could get past. The root
itself is opened following links, once per operation: a data directory that is a link its user
made on purpose works.

Failures: every OSError of these operations becomes a one-line StoreError, `<path>: <cause>` (a
full disk, a read-only file system, a permission denied), never a traceback.

Writing whole files (stage, publish, replace, sweep) is `pipeline.store.staging`, on top of this.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import StoreError, SymlinkRefusedError

__all__ = [
    "dir_entries",
    "fsync_dir",
    "fsync_fd",
    "kind_of",
    "open_dir",
    "open_file",
    "remove_dir",
    "rename_below",
    "store_error",
    "unlink_below",
]

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


def fsync_fd(fd: int, path: Path) -> None:
    """fsync the open file or directory `fd` (`path` names it in the error)."""
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
        fsync_fd(parent, path.parent)  # the new entry survives a crash
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
        fsync_fd(fd, path)


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
        fsync_fd(dst, dest.parent)
        fsync_fd(src, source.parent)


def remove_dir(root: Path, path: Path) -> None:
    """Remove the empty directory `path` (below `root`)."""
    with open_dir(root, path.parent) as parent:
        try:
            os.rmdir(path.name, dir_fd=parent)
        except OSError as exc:
            raise store_error(path, exc) from exc
        fsync_fd(parent, path.parent)
