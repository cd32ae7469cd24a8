"""A run's status from its `runs` records, across the runners that shared it.

One runner writes one `started` and one `finished` record per scenario × target, and the status
is the finished one's (none yet: `running`). Runners that share a run (`execute --shard i/N`)
each write their own pair of records, carrying `shard` and `shards`; the run is

- `partial` while some shard has no `finished` record (it is still running, or it was killed
  before it could write one): `missing_shards` names them, as `1/3,2/3`;
- else the worst of the shards' statuses: failed, interrupted, timed_out, completed.

The client's self-check is combined the same way: a run is `client_saturated` when any shard's
client was (its timings are then suspect whichever shard measured them), and the saturation
share and loop lag are the largest over the shards. Pure: a DataFrame of runs in, one row per
(run_id, scenario, target) out; `aggregate`, `execute`'s summary and `events` all use it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import polars as pl

__all__ = ["RUN_STATUS_COLUMNS", "STATUS_INPUT", "overall", "run_status", "status_text"]

KEYS = ("run_id", "scenario", "target")
STATUS_INPUT = (
    *KEYS,
    "event_id",
    "kind",
    "at",
    "status",
    "shard",
    "shards",
    "client_cpu_saturation",
    "client_saturated",
    "client_loop_lag_p95_ms",
)
"""The `runs` columns `run_status` reads."""
RUN_STATUS_COLUMNS = pl.Schema(
    [
        ("run_id", pl.String()),
        ("scenario", pl.String()),
        ("target", pl.String()),
        ("run_status", pl.String()),
        ("shards", pl.Int64()),
        ("missing_shards", pl.String()),
        ("client_cpu_saturation", pl.Float64()),
        ("client_saturated", pl.Boolean()),
        ("client_loop_lag_p95_ms", pl.Float64()),
    ]
)
_WORST_FIRST = ("failed", "interrupted", "timed_out", "completed")


def _largest(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _combine(statuses: Sequence[str]) -> str:
    for status in _WORST_FIRST:
        if status in statuses:
            return status
    return statuses[-1]


def run_status(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per (run_id, scenario, target) of `runs` (the `STATUS_INPUT` columns; the run
    tables are small, so plain Python over their rows is clearer than an expression)."""
    declared: dict[tuple[str, str, str], int | None] = {}
    last: dict[tuple[str, str, str], dict[int | None, dict[str, Any]]] = defaultdict(dict)
    ordered = runs.select(STATUS_INPUT).sort("at", "event_id", nulls_last=False)
    for row in ordered.iter_rows(named=True):
        key = (row["run_id"], row["scenario"], row["target"])
        declared.setdefault(key, None)
        if row["shards"] is not None:
            declared[key] = max(declared[key] or 0, row["shards"])
        if row["kind"] == "finished":
            last[key][row["shard"]] = row  # sorted by time: the last one wins
    out = []
    for key in sorted(declared):
        count = declared[key]
        finished = last.get(key, {})
        if count is None:  # one runner played it all (a shard-less record counts as it)
            rows = list(finished.values())
            status = rows[-1]["status"] if rows else "running"
            missing = None
        else:
            rows = [row for shard, row in finished.items() if shard is not None]
            absent = [i for i in range(count) if i not in finished]
            missing = ",".join(f"{i}/{count}" for i in absent) or None
            status = "partial" if absent else _combine([row["status"] for row in rows])
        saturated = [row["client_saturated"] for row in rows]
        out.append(
            (
                *key,
                status,
                count,
                missing,
                _largest([row["client_cpu_saturation"] for row in rows]),
                True if True in saturated else _largest(saturated),
                _largest([row["client_loop_lag_p95_ms"] for row in rows]),
            )
        )
    return pl.DataFrame(out, schema=RUN_STATUS_COLUMNS, orient="row")


def status_text(status: str, shards: int | None, missing: str | None) -> str:
    """How a table shows a run's status: `completed`, `completed (3 shards)`, `partial (shards
    1/3 not finished)`."""
    if shards is None:
        return status
    if missing:
        return f"{status} (shard{'s' if ',' in missing else ''} {missing} not finished)"
    return f"{status} ({shards} shards)"


def overall(per_pair: pl.DataFrame) -> tuple[str, int | None, str | None]:
    """One run's (status, shards, missing shards) over its pairs (`run_status` rows of one
    run_id): partial if any pair is, else the worst pair's status."""
    if per_pair.is_empty():
        return "running", None, None
    statuses = per_pair.get_column("run_status").to_list()
    counts = [c for c in per_pair.get_column("shards").to_list() if c is not None]
    missing: list[str] = []
    for text in per_pair.get_column("missing_shards").to_list():
        for item in (text or "").split(","):
            if item and item not in missing:
                missing.append(item)
    for status in ("partial", "running", *_WORST_FIRST):
        if status in statuses:
            break
    missing.sort(key=lambda item: int(item.split("/")[0]))
    return status, max(counts) if counts else None, ",".join(missing) or None
