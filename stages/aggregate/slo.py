"""Which SLO judges a result, and what it counts as a good attempt.

Which SLO (`SloPolicy`): `--slo` on the command line overrides every scenario; else the
scenario's `slo` in the *current* config (so editing it and re-running `aggregate` re-derives
attainment and goodput from the stored events, with no new request); else (the config no longer
has the scenario, or gives it no SLO) the SLO recorded in the run's `scenario_config`, so that a
sweep run with `--slo` keeps its answer when a cron's plain `aggregate` rebuilds the results.

What is good (`good_masks`), per measured attempt, with integer microseconds so a timing equal
to its threshold is exactly "met" (≤, as vLLM's `--goodput`):
- a failed attempt (any status but `ok`) misses every threshold;
- ttft: its TTFT ≤ the threshold. An attempt with no TTFT (a non-streamed response, or a stream
  without content) delivered its first token with its last byte: its latency is judged instead;
- tpot: (latency − ttft) ≤ threshold × (output_tokens − 1), i.e. (latency − ttft) /
  (output_tokens − 1) ≤ threshold without a division. With no decode phase to judge (at most
  one output token, no TTFT, an unknown count) it is met, as vLLM counts such a TPOT as 0;
- latency: its latency ≤ the threshold (an attempt without one misses it).
An attempt is good when it meets every threshold that is set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import ValidationError

from schemas import INT64_MAX, SLO_THRESHOLDS, Slo

__all__ = [
    "SLO_COUNTS",
    "SloLookup",
    "SloPolicy",
    "attainment_text",
    "good_masks",
    "recorded_slo",
]

SLO_COUNTS = {"all": "slo_good", **{name: f"slo_{name}_good" for name in SLO_THRESHOLDS}}
"""`good_masks`' names -> the per-result count of good attempts: every threshold, each alone."""

SloLookup = Callable[[str, str], Slo | None]
"""(run_id, scenario) -> the SLO that judges it, or None."""

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SloPolicy:
    """Where a result's SLO comes from (see the module docstring)."""

    override: Slo | None = None
    """`--slo`: judges every result."""
    configured: Mapping[str, Slo | None] = field(default_factory=dict)
    """Every scenario of the current config, by name, with its SLO (None: it has none)."""

    def lookup(self, runs: pl.LazyFrame) -> SloLookup:
        """The SLO of each (run_id, scenario); reads the runs' `started` records only for
        scenarios the config gives no SLO (their recorded SLO)."""
        override, configured = self.override, dict(self.configured)
        if override is not None:
            return lambda run_id, scenario: override
        with_slo = [name for name, slo in configured.items() if slo is not None]
        recorded = (
            runs.filter((pl.col("kind") == "started") & ~pl.col("scenario").is_in(with_slo))
            .sort("run_id", "scenario", "at", "event_id")
            .group_by("run_id", "scenario", maintain_order=True)
            .first()
            .select("run_id", "scenario", "scenario_config")
            .collect()
        )
        found = {
            (run_id, scenario): recorded_slo(text)
            for run_id, scenario, text in recorded.iter_rows()
        }

        def lookup(run_id: str, scenario: str) -> Slo | None:
            return configured.get(scenario) or found.get((run_id, scenario))

        return lookup


def recorded_slo(scenario_config: str | None) -> Slo | None:
    """The SLO in a run's recorded scenario JSON; None when it has none or it cannot be read
    (a record from before SLOs, or one damaged: a result without an SLO, never a failure)."""
    if not scenario_config:
        return None
    try:
        raw = json.loads(scenario_config)
    except (ValueError, RecursionError):
        return None
    value = raw.get("slo") if isinstance(raw, dict) else None
    if value is None:
        return None
    try:
        return Slo.model_validate(value)
    except ValidationError:
        return None


def good_masks(
    thresholds_us: Mapping[str, int],
    ok: BoolArray,
    latency: IntArray,
    latency_valid: BoolArray | None,
    ttft: IntArray,
    ttft_valid: BoolArray | None,
    output_tokens: IntArray,
    output_valid: BoolArray | None,
) -> dict[str, BoolArray]:
    """Per attempt, whether it meets each set threshold (`ttft`, `tpot`, `latency`) and all of
    them (`all`). Arrays as the scan reads them: nulls as 0 with a validity mask (None: no
    nulls, the usual case, which then costs no mask at all: ~12 ns an attempt for all three)."""
    out: dict[str, BoolArray] = {}
    if "ttft" in thresholds_us:
        limit = thresholds_us["ttft"]
        first = ttft <= limit
        if ttft_valid is not None:  # no TTFT: the first token came with the last byte
            by_latency = _valid(latency <= limit, latency_valid)
            first = np.where(ttft_valid, first, by_latency)
        out["ttft"] = first & ok
    if "tpot" in thresholds_us:
        limit = thresholds_us["tpot"]
        # limit × (tokens − 1) must not overflow int64: past INT64_MAX // limit tokens the
        # product is within one threshold of 2⁶³ µs (292,000 years), more than any latency.
        steps = np.minimum(output_tokens - 1, INT64_MAX // limit)
        slow = latency - ttft > steps * limit
        slow &= output_tokens > 1  # at most one token: nothing decoded to judge
        for valid in (output_valid, ttft_valid, latency_valid):
            if valid is not None:
                slow &= valid
        out["tpot"] = ok & ~slow
    if "latency" in thresholds_us:
        out["latency"] = _valid(latency <= thresholds_us["latency"], latency_valid) & ok
    every = ok.copy()
    for mask in out.values():
        every &= mask
    out["all"] = every
    return out


def _valid(mask: BoolArray, valid: BoolArray | None) -> BoolArray:
    """`mask` where the value exists, False where it is null."""
    return mask if valid is None else mask & valid


def attainment_text(share: float | None) -> str:
    """A share as a percentage rounded down to 0.1 (99.96% is shown as 99.9%, never as 100%: a
    shown attainment never looks like it reached a target it did not); "-" for none."""
    if share is None or not math.isfinite(share):
        return "-"
    return f"{math.floor(share * 1000) / 10:.1f}%"
