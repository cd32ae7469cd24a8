"""The pointer object that makes a stage's outputs current on an object store.

An object store has no rename and no lock, so an output is never overwritten in place. Each
file is stored under a key made from its own digest (`results/versions/benchmark_results-<d>.parquet`),
and one small pointer per folder (`results/current.json`) names the current file of each
output. Writers replace the pointer with a compare-and-swap (`If-Match` on its ETag), so the
two files of a stage change together, in one step, or not at all.

What a reader trusts: nothing the bucket says without checking it. A pointer must parse as
this format; every key in it must be exactly the key its entry's digest gives (so a planted
pointer cannot send a reader to another object, another folder or up the tree); and the object
fetched must have the size and digest the pointer records.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["POINTER_NAME", "Entry", "Fingerprint", "decode", "encode", "entry_for", "version_key"]

POINTER_NAME = "current.json"
_FORMAT = 1
_NAME = re.compile(r"^[a-z0-9_]+\.(parquet|md)$")
_DIGEST = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Fingerprint:
    """A file's size and content digest (blake2b, 16 bytes): what a compacted event file
    remembers of each file it merged, and what a pointer records of each output."""

    size: int
    blake2b: str

    @classmethod
    def of(cls, data: bytes) -> Fingerprint:
        return cls(len(data), hashlib.blake2b(data, digest_size=16).hexdigest())


@dataclass(frozen=True)
class Entry:
    """One output file as the pointer names it."""

    key: str
    fingerprint: Fingerprint


def version_key(folder: str, name: str, digest: str) -> str:
    path = PurePosixPath(name)
    return f"{folder}/versions/{path.stem}-{digest}{path.suffix}"


def entry_for(folder: str, name: str, data: bytes) -> Entry:
    """The content-addressed entry of output `name` holding `data`."""
    fingerprint = Fingerprint.of(data)
    return Entry(version_key(folder, name, fingerprint.blake2b), fingerprint)


def encode(files: dict[str, Entry]) -> bytes:
    body = {
        name: {"key": e.key, "size": e.fingerprint.size, "blake2b": e.fingerprint.blake2b}
        for name, e in sorted(files.items())
    }
    return json.dumps({"pipeline_outputs": _FORMAT, "files": body}, indent=1).encode()


def decode(folder: str, raw: bytes) -> dict[str, Entry]:
    """The entries of a pointer in `folder`; ValueError saying what is wrong with it."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or document.get("pipeline_outputs") != _FORMAT:
        raise ValueError(f"not a pointer of format {_FORMAT}")
    files = document.get("files")
    if not isinstance(files, dict):
        raise ValueError("no files in it")
    out = {}
    for name, item in files.items():
        if not isinstance(name, str) or not _NAME.match(name) or not isinstance(item, dict):
            raise ValueError(f"an entry that is not an output file: {str(name)[:60]!r}")
        digest, size, key = item.get("blake2b"), item.get("size"), item.get("key")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValueError(f"{name}: not a digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{name}: not a size")
        if key != version_key(folder, name, digest):
            raise ValueError(
                f"{name}: names an object outside {folder}/versions/ or not by its digest"
            )
        out[name] = Entry(key, Fingerprint(size, digest))
    return out
