"""The object-store backend: a data directory under `s3://bucket/prefix` (or `gs://`, `az://`).

Everything goes through obstore (Rust's `object_store`), which speaks S3, GCS and Azure with one
set of calls and has the one write this store is built on: `put(mode="create")`, a PUT with
`If-None-Match: *` that fails if the name is taken, decided atomically by the service.

* Publishing an event file is one create-only PUT. "Exists" means the name is taken (the caller
  tries its next sequence number); S3 answers 409 ConditionalRequestConflict when two
  conditional writes to one key overlap, which obstore reports as "exists" too, so on "exists"
  we look: an object there means taken, no object means the conflict lost nothing and the same
  name is tried again.
* A stage's outputs are written under content-addressed keys, then made current by a
  compare-and-swap of one small pointer object (`If-Match` on its ETag, `pipeline.store.pointer`).
  No lock: a writer whose swap fails builds again from what is now current, a few times, then
  stops with OutputConflictError (exit 1). Outputs are deterministic, so nothing is lost.
* Compaction is a create-only PUT of the merged file (which lists what it replaces, exactly as
  on a local disk), then deletes: readers see the same events at every step.

Credentials, region and endpoint come from the standard variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL), read by obstore itself: no key passes
through this module, and every message it raises has them scrubbed. Plain http is allowed only
to a loopback endpoint (a local S3 such as moto or MinIO on this machine).
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import obstore
import polars as pl
import pyarrow as pa
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

from pipeline.errors import InputError, OutputConflictError, StoreError, VanishedFileError
from pipeline.store import pointer
from pipeline.store.backend import Build, Store, T, Writer
from pipeline.store.lock import LockOptions

if TYPE_CHECKING:
    from obstore.store import ObjectStore as Client

__all__ = ["CAS_ATTEMPTS", "ObjectStore", "parse_url"]

CAS_ATTEMPTS = 8
"""How many times a stage builds its outputs before giving up to writers that keep winning."""
_CONFLICT_RETRIES = 5
VERSION_GRACE = timedelta(hours=1)
"""How long an output version nobody points at any more is kept: a reader that read the previous
pointer may still be fetching the file it named."""
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_R = TypeVar("_R")


def parse_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, prefix) of `scheme://bucket/prefix`; InputError naming what is wrong.
    Only plain names: no credentials, query or fragment in the URL, no `..` or empty segment."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced "[" (an IPv6 host)
        raise InputError(f"--data-dir {_scrub(url)!r}: not a URL ({exc})") from None
    scheme, bucket = parts.scheme.lower(), parts.netloc
    if parts.query or parts.fragment or "@" in bucket or ":" in bucket:
        shown = f"{scheme}://***@{bucket.rsplit('@', 1)[1]}" if "@" in bucket else url
        raise InputError(
            f"--data-dir {_scrub(shown)!r}: write it as {scheme}://bucket/prefix, with no "
            "credentials, port, query or fragment (credentials come from the environment)"
        )
    if not _BUCKET.match(bucket):
        raise InputError(
            f"--data-dir {url!r}: {bucket!r} is not a bucket name (3-63 of a-z 0-9 . -)"
        )
    segments = [s for s in parts.path.split("/") if s]
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise InputError(
                f"--data-dir {url!r}: prefix part {segment!r} must match [A-Za-z0-9][A-Za-z0-9._-]*"
            )
    return scheme, bucket, "/".join(segments)


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _s3_client_options() -> dict[str, Any]:
    """http only for a loopback AWS_ENDPOINT_URL (a local S3); anything else must be https."""
    options: dict[str, Any] = {"connect_timeout": timedelta(seconds=5)}
    variable = (
        "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
    )
    endpoint = os.environ.get(variable)
    if endpoint:
        try:
            parts = urlsplit(endpoint)
            scheme, host = parts.scheme, parts.hostname
        except ValueError:  # an unbalanced "[" (an IPv6 host)
            scheme, host = "", None
        if scheme not in ("http", "https") or not host:
            raise InputError(f"{variable}: {endpoint!r} is not an http(s) URL")
        if scheme == "http":
            if not _loopback(host):
                raise InputError(
                    f"{variable}: plain http is allowed only to a loopback endpoint "
                    f"(127.0.0.1, ::1, localhost), not {host!r}; use https"
                )
            options["allow_http"] = True
    return options


def _scrub(text: str) -> str:
    """`text` without the value of any credential variable (a message may quote a request)."""
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _scrub(lines[0] if lines else type(exc).__name__)[:300]


_TAIL = 64 * 1024
"""How much of an event file's end one footer read fetches: its footer (the schema and the
batches' offsets) is a few KiB, so one ranged GET serves the whole footer read."""


class _Ranged(io.RawIOBase):
    """A read-only, seekable view of one object that fetches only the bytes read: its last
    `_TAIL` bytes at once (how pyarrow opens an IPC file's footer: one request, not the file),
    any other range when it is read."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        self.store, self.key, self.size, self.pos = store, key, size, 0
        self.tail_at = max(0, size - _TAIL)
        self.tail = memoryview(self._get(self.tail_at, size)).cast("B") if size else None

    def _get(self, start: int, end: int) -> Any:
        try:
            return self.store.call(
                self.key,
                lambda: obstore.get_range(self.store.client, self.key, start=start, end=end),
            )
        except FileNotFoundError:
            raise VanishedFileError(self.store.where(self.key)) from None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self.pos + len(view))
        if end <= self.pos:
            return 0
        if self.tail is not None and self.pos >= self.tail_at:
            got = self.tail[self.pos - self.tail_at : end - self.tail_at]
        else:
            got = memoryview(self._get(self.pos, end)).cast("B")
        view[: len(got)] = got
        self.pos += len(got)
        return len(got)


class ObjectStore(Store):
    """A data directory under an object-store prefix."""

    read_threads = 16

    def __init__(self, location: str, client: Client) -> None:
        self.location = location.rstrip("/")
        self.client = client
        self.sizes: dict[str, int] = {}
        """Object sizes seen in listings: a footer read needs the size, and a HEAD per file
        would double the requests of a replay."""

    @classmethod
    def from_url(cls, url: str) -> ObjectStore:
        scheme, bucket, prefix = parse_url(url)
        from obstore.store import from_url

        retry: Any = {"max_retries": 4, "retry_timeout": timedelta(seconds=30)}
        options: dict[str, Any] = (
            _s3_client_options()
            if scheme in ("s3", "s3a")
            else {"connect_timeout": timedelta(seconds=5)}
        )
        base = f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")
        try:
            client = from_url(base, client_options=options, retry_config=retry)  # type: ignore[call-overload]
        except (BaseError, ValueError, OSError) as exc:
            raise InputError(f"--data-dir {url}: {_first_line(exc)}") from exc
        return cls(base, client)

    # -- plumbing ------------------------------------------------------------------------------

    def where(self, key: str) -> str:
        return f"{self.location}/{key}"

    def call(self, key: str, op: Callable[[], _R]) -> _R:
        """Run one obstore call; a missing object stays FileNotFoundError (callers decide what
        that means), anything else becomes one StoreError line naming the object."""
        try:
            return op()
        except (FileNotFoundError, AlreadyExistsError, PreconditionError):
            raise
        except (BaseError, OSError) as exc:
            raise StoreError(f"{self.where(key)}: {_first_line(exc)}") from None

    def write(self, key: str, op: Callable[[], _R]) -> _R:
        """`call` for a write: a "not found" there means the bucket is missing."""
        try:
            return self.call(key, op)
        except FileNotFoundError as exc:
            raise StoreError(
                f"{self.where(key)}: {_first_line(exc)} (does the bucket exist?)"
            ) from None

    def require(self) -> None:
        if not self.entries(""):
            raise InputError(
                f"data directory {self.location} holds nothing (is --data-dir right? "
                "`pipeline execute` writes there first)"
            )

    # -- the event log -------------------------------------------------------------------------

    def entries(self, prefix: str) -> list[tuple[str, str]]:
        try:
            found = self.call(
                prefix, lambda: obstore.list_with_delimiter(self.client, prefix or None)
            )
        except FileNotFoundError:
            return []
        out = [(p.rstrip("/").rsplit("/", 1)[-1], "dir") for p in found["common_prefixes"]]
        for meta in found["objects"]:
            self.sizes[meta["path"]] = meta["size"]
            out.append((meta["path"].rsplit("/", 1)[-1], "file"))
        return sorted(out)

    def read(self, key: str) -> bytes:
        try:
            result = self.call(key, lambda: obstore.get(self.client, key))
            return bytes(self.call(key, result.bytes))
        except FileNotFoundError:
            raise VanishedFileError(self.where(key)) from None

    def _size(self, key: str) -> int:
        if key not in self.sizes:
            try:
                self.sizes[key] = self.call(key, lambda: obstore.head(self.client, key))["size"]
            except FileNotFoundError:
                raise VanishedFileError(self.where(key)) from None
        return self.sizes[key]

    def open_footer(self, key: str) -> pa.NativeFile:
        return pa.PythonFile(_Ranged(self, key, self._size(key)), mode="r")

    def open_whole(self, key: str) -> pa.NativeFile:
        return pa.BufferReader(self.read(key))

    def scan_ipc(self, keys: Sequence[str], schema: pa.Schema) -> pl.LazyFrame:
        # Lazy like a local scan: nothing is fetched until the frame is collected.
        target = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]

        def load() -> pl.DataFrame:
            with ThreadPoolExecutor(min(self.read_threads, max(1, len(keys)))) as pool:
                frames = [pl.read_ipc(io.BytesIO(data)) for data in pool.map(self.read, keys)]
            return (
                pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema=target)
            )

        return pl.defer(load, schema=target)

    def create(self, write: Writer, keys: Iterable[str]) -> str | None:
        buffer = io.BytesIO()
        write(buffer)
        data = buffer.getvalue()
        for key in keys:
            if self._create(key, data):
                return key
        return None

    def _create(self, key: str, data: bytes) -> bool:
        """One create-only PUT; False if the name is taken (see the module docstring on 409)."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self.write(key, lambda: obstore.put(self.client, key, data, mode="create"))
                self.sizes[key] = len(data)
                return True
            except AlreadyExistsError:
                try:
                    self.call(key, lambda: obstore.head(self.client, key))
                    return False
                except FileNotFoundError:
                    time.sleep(0.05 * 2**attempt)  # a 409: nothing was written; again
        raise StoreError(
            f"{self.where(key)}: the store kept answering 409 ConditionalRequestConflict "
            f"({_CONFLICT_RETRIES} tries); run again"
        )

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):  # S3 deletes at most 1000 keys per request
            chunk = list(keys[start : start + 1000])
            try:
                self.call(chunk[0], lambda chunk=chunk: obstore.delete(self.client, chunk))  # type: ignore[misc]
            except FileNotFoundError:
                pass
        for key in keys:
            self.sizes.pop(key, None)

    def move(self, source: str, dest: str) -> None:
        # No rename on an object store: copy, then delete, so the file is never nowhere.
        try:
            self.call(source, lambda: obstore.copy(self.client, source, dest, overwrite=True))
        except FileNotFoundError:
            raise VanishedFileError(self.where(source)) from None
        self.delete([source])

    def move_folder(self, source: str, dest: str) -> int:
        keys = [
            meta["path"]
            for chunk in self.call(source, lambda: obstore.list(self.client, source))
            for meta in chunk
        ]
        for key in keys:
            self.move(key, dest + key[len(source) :])
        return sum(1 for k in keys if k.endswith(".arrow") and "/" not in k[len(source) + 1 :])

    def housekeeping(self, lock: LockOptions) -> AbstractContextManager[None]:
        # No lock exists here and none is needed: compaction's steps are each safe beside
        # readers and beside another compaction (module docstring).
        return nullcontext()

    # -- the outputs ---------------------------------------------------------------------------

    def _pointer(self, folder: str) -> tuple[dict[str, pointer.Entry], str | None] | None:
        """The pointer of `folder` and its ETag, or None when there is none yet."""
        key = f"{folder}/{pointer.POINTER_NAME}"
        try:
            result = self.call(key, lambda: obstore.get(self.client, key))
            raw = bytes(self.call(key, result.bytes))
        except FileNotFoundError:
            return None
        try:
            return pointer.decode(folder, raw), result.meta["e_tag"]
        except ValueError as exc:
            raise StoreError(f"{self.where(key)}: not an outputs pointer ({exc})") from None

    def _drop_old_versions(self, folder: str, named: set[str]) -> None:
        """Delete the versions the pointer just swapped in does not name, once older than
        VERSION_GRACE (a cron job's hourly aggregate would otherwise keep every output it ever
        wrote). A writer that swaps in after this one has just rewritten every version it names
        (they are PUT on each build), so none of those is old."""
        cutoff = datetime.now(UTC) - VERSION_GRACE
        prefix = f"{folder}/versions/"
        listed = self.call(prefix, lambda: obstore.list(self.client, prefix))
        old = [
            meta["path"]
            for chunk in listed
            for meta in chunk
            if meta["path"] not in named and meta["last_modified"] < cutoff
        ]
        if old:
            self.delete(old)

    def read_output(self, key: str) -> bytes | None:
        folder, name = key.rsplit("/", 1)
        found = self._pointer(folder)
        if found is None or name not in found[0]:
            return None
        entry = found[0][name]
        data = self.read(entry.key)
        if pointer.Fingerprint.of(data) != entry.fingerprint:
            raise StoreError(
                f"{self.where(entry.key)}: its content does not match the digest "
                f"{self.where(folder)}/{pointer.POINTER_NAME} records for it"
            )
        return data

    def write_outputs(self, folder: str, build: Build[T], lock: LockOptions) -> T:
        key = f"{folder}/{pointer.POINTER_NAME}"
        for _ in range(CAS_ATTEMPTS):
            # The pointer's ETag is read before building: a swap that still finds it proves
            # nobody made other outputs current while this one was computed.
            current = self._pointer(folder)
            value, outputs = build()
            files = dict(current[0]) if current is not None else {}
            for out_key, write in outputs:
                buffer = io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                name = out_key.rsplit("/", 1)[-1]
                entry = pointer.entry_for(folder, name, data)
                # Overwrite: the key is the content's digest, so rewriting it changes nothing
                # and repairs a planted object there.
                self.write(entry.key, lambda e=entry, d=data: obstore.put(self.client, e.key, d))  # type: ignore[misc]
                files[name] = entry
            body = pointer.encode(files)
            mode: Any = "create" if current is None else {"e_tag": current[1]}
            try:
                self.write(key, lambda b=body, m=mode: obstore.put(self.client, key, b, mode=m))  # type: ignore[misc]
            except (AlreadyExistsError, PreconditionError):
                continue  # another writer made its outputs current meanwhile: build again
            self._drop_old_versions(folder, {entry.key for entry in files.values()})
            return value
        raise OutputConflictError(
            f"{self.where(key)}: other writers replaced these outputs {CAS_ATTEMPTS} times while "
            "this one was building them; run again"
        )
