"""How far this runner's wall clock is from the data store's: the one clock every shard shares.

Runners that share a run (`execute --shard i/N`) stamp their events with their own wall clocks,
so a host whose clock is 2 s fast shifts its shard's `started_at` by 2 s against the others. The
reference every shard can reach is the store they all write to (the target need not send a
`Date` header, and with `--no-preflight` no request goes out before the load): the store stamps
a file it creates with its own clock. So the offset is `mtime of a probe file just created in
DATA/.staging` minus this runner's clock read just before creating it.

What that measures: on a shared file system (NFS and the like) the file server's clock, so the
offsets of two hosts differ by how far apart their clocks are (to within the round trip); on a
local disk this host's own clock, so ~0, within the kernel's timestamp tick (a few ms on Linux:
file times are taken from a coarse clock, so a local offset reads 0 to about -4 ms). It is
recorded, never applied: the events keep what each runner saw.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.store.layout import Layout
from pipeline.store.staging import staged_file

__all__ = ["store_clock_offset_us"]


def store_clock_offset_us(data_dir: Path | str) -> int:
    """The store's clock minus this host's wall clock, in µs (see the module's docstring)."""
    root = Path(data_dir)
    before_ns = time.time_ns()
    with staged_file(root, Layout(root).staging, lambda handle: None) as probe:
        stamped_ns = os.fstat(probe.fd).st_mtime_ns
    return (stamped_ns - before_ns) // 1000
