"""How far this runner's wall clock is from the data store's: the one clock every shard shares.

Runners that share a run (`execute --shard i/N`) stamp their events with their own wall clocks,
so a host whose clock is 2 s fast shifts its shard's `started_at` by 2 s against the others. The
reference every shard can reach is the store they all write to (the target need not send a
`Date` header, and with `--no-preflight` no request goes out before the load): the store stamps
a file it creates with its own clock. So the offset is `mtime of a probe file just created in
DATA/.staging` minus the midpoint of this runner's clock read just before and just after
creating it; of `PROBES` tries the one with the narrowest window counts (as NTP keeps the
fastest round trip: a runner descheduled mid-probe, on a busy box, would otherwise read as an
offset).

What that measures: on a shared file system (NFS and the like) the file server's clock, so the
offsets of two hosts differ by how far apart their clocks are (to within the round trip); on a
local disk this host's own clock, so ~0 (-9 µs measured here; a kernel that stamps files from
its coarse clock reads 0 to about -4 ms). It is
recorded, never applied: the events keep what each runner saw.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from pipeline.store.fsutil import open_dir, store_error
from pipeline.store.layout import Layout
from pipeline.store.local import LocalStore
from pipeline.store.location import Location, open_store
from pipeline.store.staging import TMP_SUFFIX

__all__ = ["PROBES", "store_clock_offset_us"]

PROBES = 3


def _probe(dir_fd: int, staging: Path) -> tuple[int, int]:
    """(window, offset) in ns of one probe file, created and removed at once. It is named
    like a temp file, so one left by a crash in between is swept like any other."""
    name = f"{uuid.uuid4().hex}{TMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        before = time.time_ns()
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        after = time.time_ns()
        try:
            stamped = os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:  # a sweeper removed it first: the reading stands
            pass
    except OSError as exc:
        raise store_error(staging / name, exc) from exc
    return after - before, stamped - (before + after) // 2


def store_clock_offset_us(where: Location) -> int | None:
    """The store's clock minus this host's wall clock, in µs (see the module's docstring);
    None on an object store, where it is not measured yet (its `Last-Modified` has 1 s
    resolution: a `Date` header of a PUT would do, and is for later)."""
    store = open_store(where)
    if not isinstance(store, LocalStore):
        return None
    root = store.root
    staging = Layout(root).staging
    with open_dir(root, staging, create=True) as dir_fd:
        readings = [_probe(dir_fd, staging) for _ in range(PROBES)]
    return min(readings)[1] // 1000
