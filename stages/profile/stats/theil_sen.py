"""Theil-Sen: the size of a change across runs, robust to a single bad run."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stages.profile.stats.arrays import as_finite_array

__all__ = ["theil_sen"]


def theil_sen(y: Sequence[float], x: Sequence[float] | None = None) -> tuple[float, float]:
    """Theil-Sen estimate ``(slope, intercept)`` of ``y`` against ``x`` (default ``0..n-1``).

    The slope is the median of ``(y_j - y_i) / (x_j - x_i)`` over all pairs ``i < j`` with
    ``x_i != x_j``; the intercept is ``median(y) - slope * median(x)`` (Sen / Conover). Needs at
    least two distinct ``x`` values; O(n^2) memory, fine for one value per run. Raises
    ``ValueError`` if the slope or intercept overflows (values near the float limit).
    """
    ya = as_finite_array(y, "y")
    n = ya.size
    xa = np.arange(n, dtype=np.float64) if x is None else as_finite_array(x, "x")
    if xa.size != n:
        raise ValueError(f"x has {xa.size} values, y has {n}")
    i, j = np.triu_indices(n, k=1)
    dx = xa[j] - xa[i]
    keep = dx != 0.0
    if not np.any(keep):
        raise ValueError("theil_sen needs at least two points with distinct x")
    with np.errstate(over="ignore", invalid="ignore"):
        slopes = (ya[j][keep] - ya[i][keep]) / dx[keep]
        slope = float(np.median(slopes))
        intercept = float(np.median(ya) - slope * np.median(xa))
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise ValueError("theil_sen overflowed: values too large or x values too close")
    return slope, intercept
