"""The one interface to a data directory, whatever holds it: a local folder or an object store.

It has only what both can do well: list one folder level, read an object whole (or just its
footer), create an object only if its name is free, delete, move, and replace one stage's
outputs in a single step. Everything above it (the event log, compaction, the stages) is
written once against it, so schema evolution, the compaction rules and the aggregate's reads do
not fork per backend.

How each backend keeps the promises:

| promise | local folder (`LocalStore`) | object store (`ObjectStore`) |
|---|---|---|
| a published file is whole and never replaced | staged, fsynced, hard-linked (a link never replaces a name) | one PUT with `If-None-Match: *` (create-only) |
| a stage's outputs change together or not at all | `flock` on `DATA/.lock`, staged, renamed | content-addressed objects, then one compare-and-swap (`If-Match`) of a pointer |
| a reader never sees half a compaction | the merged file lists what it replaces (digests) | the same, read the same way |
| nothing is reached through a link | `O_NOFOLLOW` at every step (`fsutil`) | an object store has no links |

Keys are relative POSIX paths from `pipeline.store.layout` (`events/requests/date=D/x.arrow`);
`where(key)` is how a message names one (a path, or an `s3://` URL).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO, TypeVar

import polars as pl
import pyarrow as pa

from pipeline.store.lock import LockOptions

__all__ = ["Build", "Store", "Writer"]

Writer = Callable[[BinaryIO], object]
"""Writes one whole file's bytes to the handle it is given."""
T = TypeVar("T")
Build = Callable[[], tuple[T, Sequence[tuple[str, Writer]]]]
"""A stage's work: read its inputs, compute, return (its result, the outputs to write by key)."""


class Store(ABC):
    """A data directory: the event log's files and the stages' outputs, by key."""

    location: str
    """The data directory as the user named it (a path or a URL); child processes reopen it."""
    read_threads: int = 1
    """How many small reads (footers) are worth running at once: one on a local disk, where
    each is a page-cache hit; many on an object store, where each is a network round trip."""

    @abstractmethod
    def where(self, key: str) -> str:
        """How messages name `key`: a path on the local file system, else the object's URL."""

    @abstractmethod
    def require(self) -> None:
        """Raise InputError unless the data directory exists (the stages that read it never
        create it: a mistyped `--data-dir` must not "succeed" with empty outputs)."""

    # -- the event log -----------------------------------------------------------------------

    @abstractmethod
    def entries(self, prefix: str) -> list[tuple[str, str]]:
        """(name, kind) of what is directly under the folder `prefix`, sorted by name; kinds are
        "file", "dir", "link" or "other"; empty when the folder is not there."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The whole object; VanishedFileError if it is gone."""

    @abstractmethod
    def open_footer(self, key: str) -> pa.NativeFile:
        """A random-access handle for reading an IPC file's footer (little of the file is read)."""

    @abstractmethod
    def open_whole(self, key: str) -> pa.NativeFile:
        """A handle for reading the whole IPC file's batches."""

    @abstractmethod
    def scan_ipc(self, keys: Sequence[str], schema: pa.Schema) -> pl.LazyFrame:
        """polars' lazy scan of these IPC files, in this order (all of this one `schema`, as
        their footers say)."""

    @abstractmethod
    def create(self, write: Writer, keys: Iterable[str]) -> str | None:
        """Write the file whole, once, and publish it under the first of `keys` that is free;
        never replace an existing object. Return that key, or None when every key was taken."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None:
        """Delete these files (one that is already gone is no error)."""

    @abstractmethod
    def move(self, source: str, dest: str) -> None:
        """Move one file (replacing what is at `dest`); the source is gone only once the
        destination holds it."""

    @abstractmethod
    def move_folder(self, source: str, dest: str) -> int:
        """Move every file under the folder `source` to the same names under `dest`; return
        how many `*.arrow` files there were."""

    def sweep(self) -> int:
        """Remove what killed writers left behind; return how many (nothing to do by default)."""
        return 0

    @abstractmethod
    def housekeeping(self, lock: LockOptions) -> AbstractContextManager[None]:
        """Held while `compact` or `archive` changes the event log."""

    # -- the outputs -------------------------------------------------------------------------

    @abstractmethod
    def read_output(self, key: str) -> bytes | None:
        """The current bytes of an output file, or None when it has not been written."""

    @abstractmethod
    def write_outputs(self, folder: str, build: Build[T], lock: LockOptions) -> T:
        """Run `build` and make the files it returns (all in `folder`) current together, so no
        reader ever sees some new and some old; return what `build` returned."""
