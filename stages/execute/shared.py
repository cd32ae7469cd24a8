"""What a runner that shares its run with others checks and waits for before it sends.

`check_unplayed` reads the run's `runs` records: a run (or a shard of it) plays once, since its
request event ids are a hash of (run, scenario, target, index, attempt) and a second play
would repeat them (`compact` keeps one row per id, so half a run would vanish). `wait_until`
is `--start-at`: the shards sleep until one wall-clock instant, so they begin together.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import trio

from pipeline.errors import InputError
from pipeline.store.eventlog import EventLog
from pipeline.store.location import Location
from stages.execute.load.pair import Stop
from stages.execute.load.plan import Shard

__all__ = ["check_unplayed", "wait_until"]


def check_unplayed(data_dir: Location, run_id: str, shard: Shard | None) -> None:
    """Refuse to play a run (or a shard of it) that the store says was played already: its
    request event ids would repeat, and `compact` keeps one row of each id. (Two runners that
    start the same shard at the same instant are not caught: give each its own --shard.)"""
    started = (  # an empty replay where there is no data directory yet (none is made)
        EventLog(data_dir)
        .replay("runs", run_ids=[run_id])
        .frame.filter(pl.col("kind") == "started")
        .select("shard", "shards")
        .unique()
        .collect()
    )
    if started.is_empty():
        return
    if shard is None:
        raise InputError(
            f"--run-id {run_id}: that run already has events, and a second runner would repeat "
            "its event ids; give a new run id, or give every runner its own --shard i/N"
        )
    counts = {n for n in started.get_column("shards").to_list() if n is not None}
    if counts and counts != {shard.count}:
        raise InputError(
            f"--shard {shard}: run {run_id} is shared by {', '.join(map(str, sorted(counts)))} "
            f"shards, not {shard.count}"
        )
    if shard.index in started.get_column("shard").to_list():
        raise InputError(
            f"--shard {shard}: run {run_id} already has this shard's events (a shard plays "
            "once: rerun the whole run under a new --run-id)"
        )
    if not counts:
        raise InputError(
            f"--shard {shard}: run {run_id} was played by one runner already (no shards)"
        )


async def wait_until(instant: datetime, stop: Stop) -> float:
    """Sleep until the wall-clock `instant` (a signal ends the wait); return how many seconds
    late we already were (0 when we waited)."""
    late = (datetime.now(UTC) - instant).total_seconds()
    if late >= 0:
        return late
    with trio.CancelScope() as scope:
        stop.scope = scope
        if stop.interrupted:
            scope.cancel()
        try:
            await trio.sleep(-late)
        finally:
            stop.scope = None
    return 0.0
