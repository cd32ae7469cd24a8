"""The answer of a sweep, from its steps' result rows: what load a target takes.

A sweep (`pipeline sweep`) is a series of ordinary runs tagged with the sweep's id, step, axis
and load (`SWEEP_TAGS`); this turns the result rows of those runs into one row per (sweep,
scenario, target) of `results/sweeps.parquet`. It is pure and reads only result rows, so the
answer is re-derived by every `aggregate` (change the SLO, rerun aggregate, get a new answer).

The definitions (README, "Sweeps"):

- A step counts when its run ended `completed` or `timed_out` and is on the sweep's axis (the
  axis of its last step: `--auto rate` probes the concurrency axis before its rate steps).
  Steps are ordered by load; at a load swept twice the later step stands.
- **max load under SLO**: the highest load such that it and every lower counted load met the
  SLO (`slo_attainment` ≥ the SLO's `attainment`, `slo_attainment_target`). The prefix, not the best single step: a
  load that passes above one that failed is noise, not capacity. Null without an SLO, or when
  the lowest load already missed it.
- **knee**: the last load before the first step (to the next load) over which p50 latency grew
  by more than `KNEE_NOISE` and by a larger factor than throughput did
  (ln(p50'/p50) > ln(T'/T)): from there on, added load buys more waiting than work. In a
  closed loop T × latency = concurrency (Little's law), so this is the point where less than
  half of the added concurrency becomes throughput, whatever the spacing of the loads. Null
  when no step does so (the sweep never reached the knee).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

__all__ = [
    "COUNTED_STATUSES",
    "KNEE_NOISE",
    "SWEEP_KEYS",
    "SWEEP_SCHEMA",
    "SweepPoint",
    "counted_steps",
    "find_knee",
    "max_load_under_slo",
    "sweep_points",
    "sweeps",
]

KNEE_NOISE = 0.05
"""A p50 latency growth this small between two steps is taken as noise, never as the knee."""
COUNTED_STATUSES = ("completed", "timed_out")
SWEEP_KEYS = ("sweep_id", "scenario", "target")

_F, _I, _S = pl.Float64(), pl.Int64(), pl.String()
SWEEP_SCHEMA = pl.Schema(
    [
        ("sweep_id", _S),
        ("scenario", _S),
        ("target", _S),
        ("provider", _S),
        ("model", _S),
        ("axis", _S),
        ("timestamp", pl.Datetime("us", "UTC")),
        ("steps", _I),
        ("steps_excluded", _I),
        ("first_run_id", _S),
        ("last_run_id", _S),
        ("loads", pl.List(_F)),
        ("min_load", _F),
        ("max_load", _F),
        ("slo", _S),
        ("slo_target_attainment", _F),
        ("max_load_under_slo", _F),
        ("goodput_at_max_rps", _F),
        ("throughput_at_max_rps", _F),
        ("attainment_at_max", _F),
        ("run_id_at_max", _S),
        ("knee_load", _F),
        ("knee_throughput_rps", _F),
        ("knee_latency_p50_ms", _F),
        ("peak_throughput_rps", _F),
        ("peak_goodput_rps", _F),
    ]
)
"""The columns of results/sweeps.parquet, in order (README, "Sweeps", defines each)."""


@dataclass(frozen=True)
class SweepPoint:
    """One counted step of a sweep, as the answer needs it."""

    load: float
    run_id: str
    throughput_rps: float | None
    latency_p50_ms: float | None
    attainment: float | None = None
    goodput_rps: float | None = None


def _grew(after: float | None, before: float | None) -> float | None:
    """ln(after / before), or None when either is missing or not positive."""
    if after is None or before is None or after <= 0 or before <= 0:
        return None
    return math.log(after / before)


def find_knee(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The knee of points ordered by load (see the module docstring), or None."""
    for before, after in zip(points, points[1:], strict=False):
        latency = _grew(after.latency_p50_ms, before.latency_p50_ms)
        if latency is None or latency <= math.log1p(KNEE_NOISE):
            continue
        throughput = _grew(after.throughput_rps, before.throughput_rps)
        # Throughput that fell to nothing (every request failed) counts as no gain at all.
        if throughput is None or latency > throughput:
            return before
    return None


def max_load_under_slo(points: Sequence[SweepPoint], target: float | None) -> SweepPoint | None:
    """The highest point of the prefix (by load) whose attainment is at least `target`."""
    if target is None:
        return None
    best = None
    for point in points:
        if point.attainment is None or point.attainment < target:
            break
        best = point
    return best


def counted_steps(group: pl.DataFrame) -> pl.DataFrame:
    """The result rows of one sweep × target that count (see the module docstring), one per
    load (the later step at a load swept twice), ordered by load."""
    ordered = group.sort(["sweep_step", "run_id"])
    axis = ordered.get_column("sweep_axis")[-1]
    return (
        ordered.filter(
            (pl.col("sweep_axis") == axis) & pl.col("run_status").is_in(list(COUNTED_STATUSES))
        )
        .unique("sweep_load", keep="last", maintain_order=True)
        .sort("sweep_load")
    )


def sweep_points(steps: pl.DataFrame) -> list[SweepPoint]:
    """`counted_steps` as the points the answer is computed from."""
    return [
        SweepPoint(
            load=float(row["sweep_load"]),
            run_id=row["run_id"],
            throughput_rps=row.get("throughput_rps"),
            latency_p50_ms=row.get("latency_p50_ms"),
            attainment=row.get("slo_attainment"),
            goodput_rps=row.get("goodput_rps"),
        )
        for row in steps.iter_rows(named=True)
    ]


def _answer(group: pl.DataFrame) -> dict[str, Any]:
    rows = group.sort(["sweep_step", "run_id"]).to_dicts()
    steps = counted_steps(group)
    points = sweep_points(steps)
    counted = steps.to_dicts()
    slo = next((r.get("slo") for r in reversed(counted) if r.get("slo")), None)
    target = next((r.get("slo_attainment_target") for r in reversed(counted) if r.get("slo")), None)
    best = max_load_under_slo(points, target)
    knee = find_knee(points)
    goodputs = [p.goodput_rps for p in points if p.goodput_rps is not None]
    throughputs = [p.throughput_rps for p in points if p.throughput_rps is not None]
    first, last = rows[0], rows[-1]
    return {
        "sweep_id": first["sweep_id"],
        "scenario": first["scenario"],
        "target": first["target"],
        "provider": last["provider"],
        "model": last["model"],
        "axis": last["sweep_axis"],
        "timestamp": first["timestamp"],
        "steps": len(points),
        "steps_excluded": len(rows) - len(points),
        "first_run_id": first["run_id"],
        "last_run_id": last["run_id"],
        "loads": [p.load for p in points],
        "min_load": points[0].load if points else None,
        "max_load": points[-1].load if points else None,
        "slo": slo,
        "slo_target_attainment": target,
        "max_load_under_slo": best.load if best else None,
        "goodput_at_max_rps": best.goodput_rps if best else None,
        "throughput_at_max_rps": best.throughput_rps if best else None,
        "attainment_at_max": best.attainment if best else None,
        "run_id_at_max": best.run_id if best else None,
        "knee_load": knee.load if knee else None,
        "knee_throughput_rps": knee.throughput_rps if knee else None,
        "knee_latency_p50_ms": knee.latency_p50_ms if knee else None,
        "peak_throughput_rps": max(throughputs) if throughputs else None,
        "peak_goodput_rps": max(goodputs) if goodputs else None,
    }


def sweeps(results: pl.DataFrame) -> pl.DataFrame:
    """One answer row per (sweep_id, scenario, target) of the result rows tagged by a sweep."""
    tagged = results.filter(pl.col("sweep_id").is_not_null())
    rows = [_answer(group) for _, group in tagged.group_by(list(SWEEP_KEYS), maintain_order=True)]
    frame = pl.DataFrame(rows, schema=SWEEP_SCHEMA) if rows else None
    if frame is None:
        return SWEEP_SCHEMA.to_frame()
    return frame.sort(list(SWEEP_KEYS))
