"""The local backend: a data directory on this machine's file system.

Every operation goes through the confined, symlink-refusing file operations of
`pipeline.store.fsutil` and the staged writes of `pipeline.store.staging`: a file is written
whole under `DATA/.staging/`, fsynced, then published by hard link (never replacing a name) or,
for outputs, renamed into place under the data directory's `flock` (`pipeline.store.lock`).
Reads hand pyarrow and polars plain paths, which is what keeps the local aggregate as fast as
it was before the store had a second backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.errors import SymlinkRefusedError, VanishedFileError
from pipeline.store.backend import Build, Store, T, Writer
from pipeline.store.fsutil import (
    dir_entries,
    fsync_dir,
    kind_of,
    open_file,
    remove_dir,
    rename_below,
    unlink_below,
)
from pipeline.store.layout import Layout, require_data_dir
from pipeline.store.lock import LockOptions, exclusive_lock
from pipeline.store.staging import Staged, publish_new, replace_atomic, stage, staged_file
from pipeline.store.staging import sweep_staging as _sweep_staging

__all__ = ["LocalStore", "replace_outputs"]


class LocalStore(Store):
    """A data directory on the local file system (it may itself be a link its user made)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.layout = Layout(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def where(self, key: str) -> str:
        return str(self.path(key))

    def require(self) -> None:
        require_data_dir(self.root)

    def entries(self, prefix: str) -> list[tuple[str, str]]:
        try:
            return dir_entries(self.root, self.path(prefix))
        except FileNotFoundError:
            return []

    def read(self, key: str) -> bytes:
        try:
            fd = open_file(self.root, self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise VanishedFileError(self.where(key)) from None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def open_footer(self, key: str) -> pa.NativeFile:
        return self.open_whole(key)

    def open_whole(self, key: str) -> pa.NativeFile:
        # Read, not memory-mapped: mapping and unmapping serialise threads on the process's
        # address space, which shows with many small files (measured: same speed on big ones).
        try:
            return pa.OSFile(self.where(key))
        except FileNotFoundError:
            raise VanishedFileError(self.where(key)) from None

    def scan_ipc(self, keys: Sequence[str], schema: pa.Schema) -> pl.LazyFrame:
        return pl.scan_ipc([self.where(k) for k in keys], glob=False)

    def create(self, write: Writer, keys: Iterable[str]) -> str | None:
        with staged_file(self.root, self.layout.staging, write) as tmp:
            for key in keys:
                if publish_new(tmp, self.path(key)):
                    return key
        return None

    def delete(self, keys: Sequence[str]) -> None:
        folders = set()
        for key in keys:
            unlink_below(self.root, self.path(key))
            folders.add(self.path(key).parent)
        for folder in sorted(folders):  # once per folder, not per file
            fsync_dir(self.root, folder)

    def move(self, source: str, dest: str) -> None:
        rename_below(self.root, self.path(source), self.path(dest))

    def move_folder(self, source: str, dest: str) -> int:
        entries = dir_entries(self.root, self.path(source))
        if kind_of(self.root, self.path(dest)) is None:
            rename_below(self.root, self.path(source), self.path(dest))  # one atomic step
        else:  # moved there before (then the folder came back): move in file by file
            for name, _ in entries:
                rename_below(self.root, self.path(f"{source}/{name}"), self.path(f"{dest}/{name}"))
            remove_dir(self.root, self.path(source))
        return sum(1 for n, kind in entries if kind == "file" and n.endswith(".arrow"))

    def sweep(self) -> int:
        return _sweep_staging(self.root)

    def housekeeping(self, lock: LockOptions) -> AbstractContextManager[None]:
        return exclusive_lock(self.root, lock)

    def read_output(self, key: str) -> bytes | None:
        path = self.path(key)
        for each in (path.parent, path):
            if each.is_symlink():
                raise SymlinkRefusedError(each)
        if not path.is_file():
            return None
        return self.read(key)

    def write_outputs(self, folder: str, build: Build[T], lock: LockOptions) -> T:
        with exclusive_lock(self.root, lock):
            value, outputs = build()
            replace_outputs(self.root, [(self.path(key), write) for key, write in outputs])
        return value


def replace_outputs(root: Path, outputs: Sequence[tuple[Path, Writer]]) -> list[Path]:
    """Stage every output under `root/.staging` (at once, in threads: writing and fsync release
    the GIL), then replace each path atomically. A failure while staging replaces nothing."""
    staging = Layout(root).staging
    staged: list[Staged] = []
    try:
        if len(outputs) == 1:
            staged.append(stage(root, staging, outputs[0][1]))
        else:
            with ThreadPoolExecutor(len(outputs)) as pool:
                futures = [pool.submit(stage, root, staging, write) for _, write in outputs]
            failures = []
            for future in futures:  # all done: keep what was staged, so it is removed below
                try:
                    staged.append(future.result())
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                    failures.append(exc)
            if failures:
                raise failures[0]
        for (path, _), tmp in zip(outputs, staged, strict=True):
            replace_atomic(tmp, path)
    finally:
        for tmp in staged:
            tmp.close()
    return [path for path, _ in outputs]
