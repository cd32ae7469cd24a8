"""Which store a `--data-dir` names: a local folder, or an object store by its URL.

`s3://bucket/prefix` (and `gs://`, `az://`, which obstore serves through the same code) open an
`ObjectStore`; anything else that looks like a URL (`foo://x`, or `s3:/x` with a slash lost)
is refused with exit 2 rather than made into a folder: before this module,
`--data-dir s3://b/p` quietly created `./s3:/b/p`. A folder whose name really starts like a
URL is still reachable as `./s3:/x`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import InputError
from pipeline.store.backend import Store
from pipeline.store.local import LocalStore
from pipeline.store.objstore import ObjectStore

__all__ = ["OBJECT_SCHEMES", "Location", "is_url", "open_store"]

Location = str | os.PathLike[str] | Store
OBJECT_SCHEMES = ("s3", "gs", "az")
_URL_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")
"""A scheme of two letters or more, a colon and a slash: a URL, whole or with a slash lost."""


def is_url(text: str) -> bool:
    """Whether a `--data-dir` looks like a URL (whole, or with a slash lost), not a folder."""
    return _URL_LIKE.match(text) is not None


def open_store(where: Location) -> Store:
    """The store `where` names (a Store is returned as it is)."""
    if isinstance(where, Store):
        return where
    if isinstance(where, Path):
        return LocalStore(where)
    text = os.fspath(where)
    match = _URL_LIKE.match(text)
    if match is None:
        return LocalStore(Path(text))
    scheme = match["scheme"].lower()
    if scheme not in OBJECT_SCHEMES or not text.startswith(f"{match['scheme']}://"):
        raise InputError(
            f"--data-dir {text!r}: not a folder and not an object-store URL this pipeline "
            "serves (s3://bucket/prefix, gs://bucket/prefix or az://container/prefix); for a "
            "local folder with such a name, write ./ before it"
        )
    return ObjectStore.from_url(text)
