"""A metric's trend across runs: direction, size, confidence and change point, in one call.

The caller passes one summary value per run, ordered by run start (DESIGN.md, "Trends");
:func:`analyze_trend` combines the statistics of ``stages.profile.stats`` (Theil-Sen for the size,
Mann-Kendall for the confidence, the step detector for a change point) and decides the direction
with the thresholds of a :class:`schemas.TrendSettings`, whose defaults are the calibrated ones
(the one place they are written). The method, the thresholds and their calibration are described
in ``docs/trends.md`` and measured by ``bench/trend_calibration.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from schemas import TrendSettings
from stages.profile.stats.arrays import relative_base
from stages.profile.stats.mann_kendall import MKResult, mann_kendall
from stages.profile.stats.step import StepResult, welch_step
from stages.profile.stats.theil_sen import theil_sen

__all__ = ["DEFAULT_TRENDS", "Direction", "TrendOutcome", "analyze_trend", "min_runs_for_direction"]

Direction = Literal["improving", "degrading", "stable", "insufficient_data"]

DEFAULT_TRENDS = TrendSettings()
"""The model's defaults, for callers that have no config (tests, benches)."""


@dataclass(frozen=True)
class TrendOutcome:
    """What :func:`analyze_trend` concludes about one metric's series of run summaries.

    ``relative_change`` is ``None`` only for ``insufficient_data``. ``confidence`` is the one-sided
    Mann-Kendall confidence in the direction of the Theil-Sen slope (of S when the slope is 0;
    0.0 when both are 0). ``change_point`` is an index into the *input* sequence (missing values
    included), the first run after the step; ``change_point_p``, ``step_relative_change`` and
    ``change_point_direction`` are set only when a change point is reported. ``mann_kendall`` and
    ``step`` carry the full statistics (``step`` is the best split even when not significant).
    """

    direction: Direction
    relative_change: float | None
    confidence: float
    n_points: int
    slope: float | None = None
    change_point: int | None = None
    change_point_p: float | None = None
    step_relative_change: float | None = None
    change_point_direction: Literal["improving", "degrading"] | None = None
    mann_kendall: MKResult | None = None
    step: StepResult | None = None


def min_runs_for_direction(settings: TrendSettings = DEFAULT_TRENDS) -> int:
    """The fewest runs with which :func:`analyze_trend` can call a direction under ``settings``.

    People are told this number (the CLI's note, the report), because a short history is always
    ``stable`` and that must not read as "no trend". A direction needs the Mann-Kendall confidence
    to reach ``confidence_threshold``, and the best a series of n runs can reach is a strictly
    monotone one's (``1 - 1/n!``): 5 runs with the default 0.99. The loop ends for every valid
    threshold (<= 1): from about 19 runs that confidence rounds to 1.0.
    """
    n = max(settings.min_points, 2)
    while True:
        best = mann_kendall([float(i) for i in range(n)]).confidence_increasing
        if best >= settings.confidence_threshold:
            return n
        n += 1


def _unscale(value: float, exponent: int) -> float:
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(math.inf, value)


def _judge(delta_sign: float, higher_is_better: bool) -> Literal["improving", "degrading"]:
    return "improving" if (delta_sign > 0) == higher_is_better else "degrading"


def analyze_trend(
    values: Sequence[float | None],
    *,
    higher_is_better: bool,
    settings: TrendSettings = DEFAULT_TRENDS,
    step_scale: Literal["auto", "log", "linear"] = "auto",
) -> TrendOutcome:
    """Direction, size, confidence and change point of one metric across runs.

    ``values`` holds one summary per run in run order. ``None``, NaN and ±inf are missing values:
    they are dropped, but the remaining values keep their run positions as the x of the Theil-Sen
    fit and ``change_point`` indexes the input sequence. The thresholds below are ``settings``'
    fields. Fewer than ``max(min_points, 2)`` finite values give ``insufficient_data``.

    * ``relative_change = slope * (x_last - x_first) / base``: the Theil-Sen change over the window
      relative to the fitted value at the first run. ``base = |fitted start|``; if that is 0 (up to
      1e-9 of the largest |value|), the mean absolute value is used instead; a series of zeros has
      relative change 0.
    * ``confidence``: one-sided Mann-Kendall confidence in the direction of the slope.
    * A direction only when ``|relative_change| >= min_change`` and
      ``confidence >= confidence_threshold``; otherwise ``stable``.
    * A change point when the best split (:func:`welch_step`, on ``log`` values when
      ``step_scale`` is ``"log"``, or ``"auto"`` and every value is positive) has ``p <= step_p``
      and its ``|relative change| >= min_change``. ``change_point_direction`` judges the step with
      ``higher_is_better``, so a caller can alert on degrading steps only.
    """
    positions: list[float] = []
    finite: list[float] = []
    for idx, value in enumerate(values):
        if value is None:
            continue
        fv = float(value)
        if math.isfinite(fv):
            positions.append(float(idx))
            finite.append(fv)
    n = len(finite)
    if n < max(settings.min_points, 2):
        return TrendOutcome(
            direction="insufficient_data", relative_change=None, confidence=0.0, n_points=n
        )

    # Every statistic here is scale-invariant, so the values are first scaled by a power of two
    # into [0.5, 1) in magnitude (exact barring underflow of values ~1e-308 times smaller than the
    # largest): no overflow for values near the float limit, no loss for subnormal ones.
    raw = np.asarray(finite, dtype=np.float64)
    peak = float(np.max(np.abs(raw)))
    exponent = math.frexp(peak)[1] if peak > 0.0 else 0
    ya = np.ldexp(raw, -exponent)
    scaled = ya.tolist()
    slope_scaled, intercept = theil_sen(scaled, positions)
    fitted_start = intercept + slope_scaled * positions[0]
    base = relative_base(fitted_start, ya)
    span = positions[-1] - positions[0]
    relative_change = slope_scaled * span / base if base > 0.0 else 0.0
    slope = _unscale(slope_scaled, exponent)

    mk = mann_kendall(scaled)
    sign = math.copysign(1.0, slope_scaled) if slope_scaled != 0.0 else float(np.sign(mk.s))
    if sign > 0:
        confidence = mk.confidence_increasing
    elif sign < 0:
        confidence = mk.confidence_decreasing
    else:
        confidence = 0.0

    direction: Direction = "stable"
    if (
        slope_scaled != 0.0
        and abs(relative_change) >= settings.min_change
        and confidence >= settings.confidence_threshold
    ):
        direction = _judge(slope_scaled, higher_is_better)

    positive = bool(np.all(ya > 0.0))
    if step_scale == "log" and not positive:
        raise ValueError("step_scale='log' needs every value to be positive")
    log_scale = step_scale == "log" or (step_scale == "auto" and positive)
    step = welch_step(scaled, settings.min_segment, log_scale=log_scale)
    if step is not None:
        step = replace(
            step,
            mean_before=_unscale(step.mean_before, exponent),
            mean_after=_unscale(step.mean_after, exponent),
        )
    change_point: int | None = None
    change_point_p: float | None = None
    step_rel: float | None = None
    cp_direction: Literal["improving", "degrading"] | None = None
    if (
        step is not None
        and step.p_value <= settings.step_p
        and abs(step.relative_change) >= settings.min_change
    ):
        change_point = int(positions[step.index])
        change_point_p = step.p_value
        step_rel = step.relative_change
        cp_direction = _judge(step.relative_change, higher_is_better)

    return TrendOutcome(
        direction=direction,
        relative_change=relative_change,
        confidence=confidence,
        n_points=n,
        slope=slope,
        change_point=change_point,
        change_point_p=change_point_p,
        step_relative_change=step_rel,
        change_point_direction=cp_direction,
        mann_kendall=mk,
        step=step,
    )
