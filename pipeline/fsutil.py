"""Durable file primitives: write to staging, fsync, publish by link or rename, fsync the directory.

Paths stay plain (no local-only tricks beyond link/rename), so an object-store backend can map
"publish" to a single PUT of a finished object.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_dir", "makedirs_durable", "publish_new", "replace_atomic", "staged_file"]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """Create `path` and its missing parents, fsyncing each parent so the entries survive a crash."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            pass
        fsync_dir(directory.parent)


def staged_file(staging: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a complete, fsynced file under `staging` and return its path."""
    makedirs_durable(staging)
    tmp = staging / f"{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def publish_new(tmp: Path, final: Path) -> bool:
    """Publish `tmp` at `final` only if nothing is there (hard link); False if the name is taken."""
    makedirs_durable(final.parent)
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    fsync_dir(final.parent)
    tmp.unlink()
    return True


def replace_atomic(tmp: Path, final: Path) -> None:
    """Replace `final` with `tmp` in one step (readers see the old or the new file, never half)."""
    makedirs_durable(final.parent)
    os.replace(tmp, final)
    fsync_dir(final.parent)
