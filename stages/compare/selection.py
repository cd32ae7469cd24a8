"""Which run stands for a target: the one rule that `compare` and `recommend` share.

Taking each target's latest run whatever its size let a 5-request smoke test replace a
200-request run and change the winner. The rule, per group of runs (compare: scenario × target;
recommend: scenario × target × mode × concurrency, so that a sweep keeps one run per step):

1. only runs that ended `completed` or `timed_out` count (an interrupted run is partial);
2. the settings are the latest such run's mode and concurrency (what the results record, and
   what `profile` trends over): an older run at other settings is another experiment;
3. of the runs at those settings, the latest that measured at least `min_requests` attempts
   (`[compare] min_requests`; failed attempts count, so a run where most requests failed is
   evidence of failure, not a run too small to count);
4. the steps of `pipeline sweep` stand for a group only when it has no other usable run: a
   sweep's last step (often past the target's capacity, by design) is not the target's
   everyday settings, and the sweep has its own answer (`results/sweeps.parquet`).

A group with no such run is left out. Each newer run passed over, and each group left out, comes
with a sentence saying why, for the command to print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

__all__ = ["USABLE_STATUSES", "PassedOver", "RunSelection", "select_runs"]

USABLE_STATUSES = ("completed", "timed_out")
"""Run statuses whose results stand for a target (the same as profile's trends)."""

_ORDER = ("timestamp", "run_id")
"""Runs in the order they started (the run id breaks ties), as profile orders them."""


@dataclass(frozen=True)
class PassedOver:
    """A group whose latest run was not used: what was used instead (None: nothing) and why."""

    scenario: str
    target: str
    used_run_id: str | None
    reasons: tuple[str, ...]
    """One per newer run passed over, newest first: "run r9 measured 5 requests, below 20"."""
    group: str = ""
    """The group's other keys when there are any ("closed, concurrency 4")."""

    def sentence(self) -> str:
        """One line for a person: which runs were passed over and why, and what was used."""
        head = f"{self.scenario} @ {self.target}{f' ({self.group})' if self.group else ''}: "
        used = (
            f"using {self.used_run_id}"
            if self.used_run_id is not None
            else "no run qualifies, left out"
        )
        return head + "; ".join(self.reasons) + f": {used}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "group": self.group,
            "used_run_id": self.used_run_id,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class RunSelection:
    """The runs chosen (one result row per group) and the groups where the latest was not used."""

    chosen: pl.DataFrame
    passed_over: tuple[PassedOver, ...]
    min_requests: int


_SHOWN = 3
"""Runs named per group passed over; older ones are counted ("and 4 older")."""


def _reason(row: dict[str, Any], settings: dict[str, Any] | None, min_requests: int) -> str:
    run = f"run {row['run_id']}"
    status = row["run_status"]
    if status not in USABLE_STATUSES or settings is None:
        if row.get("missing_shards"):
            return f"{run} is {status}: shard(s) {row['missing_shards']} did not finish"
        return f"{run} is {status or 'without a run record'}"
    if row.get("sweep_id") is not None:
        return f"{run} is step {row['sweep_step']} of {row['sweep_id']} (see pipeline sweep)"
    if (row["mode"], row["concurrency"]) != (settings["_mode"], settings["_concurrency"]):
        return (
            f"{run} ran at concurrency {row['concurrency']} ({row['mode']} loop), not the "
            f"latest run's {settings['_concurrency']} ({settings['_mode']})"
        )
    return f"{run} measured {row['operations']} requests, below [compare] min_requests = {min_requests}"


def _key(row: dict[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


def select_runs(results: pl.DataFrame, keys: Sequence[str], min_requests: int) -> RunSelection:
    """The run that stands for each group of `keys` in `results` (one row per run), by the
    module's rule, with the runs passed over. `keys` must include scenario and target."""
    keys = list(keys)
    ordered = results.sort([*keys, *_ORDER], nulls_last=True)
    usable = ordered.filter(pl.col("run_status").is_in(USABLE_STATUSES))
    ordinary = pl.col("sweep_id").is_null()
    usable = usable.filter(ordinary | ~ordinary.any().over(keys))  # rule 4
    settings = usable.group_by(keys, maintain_order=True).agg(
        pl.col("mode").last().alias("_mode"), pl.col("concurrency").last().alias("_concurrency")
    )
    chosen = (
        usable.join(settings, on=keys, how="inner", nulls_equal=True)
        .filter(
            pl.col("mode").eq_missing(pl.col("_mode"))
            & pl.col("concurrency").eq_missing(pl.col("_concurrency"))
            & (pl.col("operations") >= min_requests)
        )
        .drop("_mode", "_concurrency")
        .group_by(keys, maintain_order=True)
        .last()
    )
    used = {_key(r, keys): r for r in chosen.select(*keys, *_ORDER).iter_rows(named=True)}
    reference = {_key(r, keys): r for r in settings.iter_rows(named=True)}
    passed = []
    for group in ordered.partition_by(keys, maintain_order=True):
        key = _key(group.row(0, named=True), keys)
        pick = used.get(key)
        newer = group
        if pick is not None:
            newer = group.filter(
                (pl.col("timestamp") > pick["timestamp"])
                | ((pl.col("timestamp") == pick["timestamp"]) & (pl.col("run_id") > pick["run_id"]))
            )
        if newer.is_empty():
            continue
        rows = newer.to_dicts()[::-1]
        reasons = [_reason(r, reference.get(key), min_requests) for r in rows[:_SHOWN]]
        if len(rows) > _SHOWN:
            reasons.append(f"and {len(rows) - _SHOWN} older")
        first = rows[0]
        passed.append(
            PassedOver(
                first["scenario"],
                first["target"],
                pick["run_id"] if pick is not None else None,
                tuple(reasons),
                ", ".join(f"{k} {first[k]}" for k in keys if k not in ("scenario", "target")),
            )
        )
    return RunSelection(chosen, tuple(passed), min_requests)
