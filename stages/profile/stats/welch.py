"""Two-sample t-tests from segment moments: Welch's unequal-variance test and Student's pooled
one (the step detector's guard), so that the detector can test every split in O(1) each."""

from __future__ import annotations

import math
from collections.abc import Sequence

from stages.profile.stats.arrays import as_finite_array
from stages.profile.stats.special import student_t_sf

__all__ = ["pooled_p", "welch_from_moments", "welch_t_test"]


def welch_from_moments(
    n_a: int, mean_a: float, var_a: float, n_b: int, mean_b: float, var_b: float
) -> tuple[float, float, float]:
    """Welch's test of ``mean_b - mean_a`` from segment moments: ``(t, df, two-sided p)``."""
    se2_a = var_a / n_a
    se2_b = var_b / n_b
    se2 = se2_a + se2_b
    diff = mean_b - mean_a
    if se2 <= 0.0:
        # Both segments constant: a difference is certain, no difference is no evidence.
        if diff == 0.0:
            return 0.0, float(n_a + n_b - 2), 1.0
        return math.copysign(math.inf, diff), float(n_a + n_b - 2), 0.0
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (se2_a * se2_a / (n_a - 1) + se2_b * se2_b / (n_b - 1))
    return t, df, min(1.0, 2.0 * student_t_sf(abs(t), df))


def pooled_p(n_a: int, mean_a: float, var_a: float, n_b: int, mean_b: float, var_b: float) -> float:
    """Two-sided p of Student's equal-variance t-test from segment moments."""
    df = n_a + n_b - 2
    pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / df
    diff = mean_b - mean_a
    if pooled <= 0.0:
        return 1.0 if diff == 0.0 else 0.0
    t = diff / math.sqrt(pooled * (1.0 / n_a + 1.0 / n_b))
    return min(1.0, 2.0 * student_t_sf(abs(t), float(df)))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of ``mean(b) - mean(a)``: ``(t, df, two-sided p)``.

    Degrees of freedom by Welch-Satterthwaite; each sample needs at least 2 values. If both samples
    are constant, ``t`` is ``±inf`` with ``p = 0`` when the means differ, and ``t = 0, p = 1`` when
    they do not.
    """
    aa = as_finite_array(a, "a")
    ba = as_finite_array(b, "b")
    if aa.size < 2 or ba.size < 2:
        raise ValueError("each sample needs at least 2 values")
    return welch_from_moments(
        int(aa.size),
        float(aa.mean()),
        float(aa.var(ddof=1)),
        int(ba.size),
        float(ba.mean()),
        float(ba.var(ddof=1)),
    )
