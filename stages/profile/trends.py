"""Trend statistics across runs: Theil-Sen, Mann-Kendall, a Welch step detector.

Pure functions on plain sequences of floats: no I/O, no polars, no scipy. The caller passes one
summary value per run, ordered by run start (DESIGN.md, "Trends"); :func:`analyze_trend` turns such a
series into a :class:`TrendOutcome`. The method, the thresholds and their calibration are described
in ``docs/trends.md`` and measured by ``bench/trend_calibration.py``.

Choices worth knowing (each also documented where it is made):

* Mann-Kendall null distribution: exact whenever it can be computed exactly, i.e. without ties for
  ``n <= EXACT_MAX_N`` (Mahonian numbers: the number of inversions of a random permutation) and with
  ties for ``n <= EXACT_TIES_MAX_N`` (enumeration of every permutation of the observed ranks);
  otherwise the normal approximation with the tie-corrected variance and a continuity correction.
* "Confidence" is one-sided: ``confidence_increasing = 1 - P(S >= s_obs | H0)``. For a strictly
  increasing series of ``n`` values this is ``1 - 1/n!``: 0.833 at n = 3, 0.958 at n = 4 and 0.992
  at n = 5, so with the default threshold 0.99 a direction needs at least 5 runs.
* The step detector tries every split with both segments of at least ``min_segment`` values and
  takes the smallest p, each split's Welch p guarded by the pooled-variance p (``max`` of the two),
  on ``log(y)`` when every value is positive. The guard is the correction for choosing the best of
  many splits, calibrated by simulation (docs/trends.md); Bonferroni was too costly in power.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_CONFIDENCE_THRESHOLD",
    "DEFAULT_MIN_CHANGE",
    "DEFAULT_MIN_POINTS",
    "DEFAULT_MIN_SEGMENT",
    "DEFAULT_STEP_P",
    "EXACT_MAX_N",
    "EXACT_TIES_MAX_N",
    "Direction",
    "MKMethod",
    "MKResult",
    "StepResult",
    "TrendOutcome",
    "analyze_trend",
    "mann_kendall",
    "normal_cdf",
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_sf",
    "theil_sen",
    "welch_step",
    "welch_t_test",
]

Direction = Literal["improving", "degrading", "stable", "insufficient_data"]
MKMethod = Literal["exact", "exact_ties", "normal", "degenerate"]

DEFAULT_MIN_CHANGE = 0.05
"""Smallest |relative change| over the window that can be called a direction (or a step)."""
DEFAULT_CONFIDENCE_THRESHOLD = 0.99
"""One-sided Mann-Kendall confidence a direction needs (calibrated: docs/trends.md)."""
DEFAULT_STEP_P = 0.001
"""Largest (pooled-guarded) Welch p-value of the best split reported as a change point."""
DEFAULT_MIN_POINTS = 3
"""Fewer finite values than this give ``insufficient_data``."""
DEFAULT_MIN_SEGMENT = 3
"""Smallest segment on either side of a candidate change point."""

EXACT_MAX_N = 60
"""Largest n for which the tie-free Mann-Kendall null distribution is computed exactly."""
EXACT_TIES_MAX_N = 8
"""Largest n for which a tied series gets the exact (enumerated) null distribution."""

_FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MKResult:
    """Mann-Kendall statistic and one-sided confidences.

    ``p_increasing = P(S >= s | H0)`` and ``confidence_increasing = 1 - p_increasing``;
    ``p_decreasing = P(S <= s | H0)`` and ``confidence_decreasing = 1 - p_decreasing``.
    ``method`` says how the null distribution was obtained; ``"degenerate"`` means fewer than two
    values or all values equal (no evidence either way: both confidences are 0).
    """

    s: int
    n: int
    var_s: float
    p_increasing: float
    p_decreasing: float
    confidence_increasing: float
    confidence_decreasing: float
    method: MKMethod
    has_ties: bool


@dataclass(frozen=True)
class StepResult:
    """The best single split of a series by Welch's t-test (see :func:`welch_step`).

    ``index`` is the first index of the second segment. ``p_value = max(p_welch, p_pooled)``: the
    split's two-sided Welch p guarded by Student's pooled-variance p. ``t`` and ``df`` are Welch's
    (on ``log(y)`` when ``log_scale``). ``mean_before``/``mean_after`` are arithmetic means of the
    values; ``relative_change = (mean_after - mean_before) / base`` with ``base = |mean_before|``,
    or the mean absolute value of the whole series when ``mean_before`` is 0 (0.0 if that is 0
    too). ``n_splits`` is the number of splits tried.
    """

    index: int
    p_value: float
    p_welch: float
    p_pooled: float
    t: float
    df: float
    mean_before: float
    mean_after: float
    relative_change: float
    n_splits: int
    log_scale: bool


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


# --------------------------------------------------------------------------------------------
# Special functions
# --------------------------------------------------------------------------------------------

_BETACF_MAXIT = 100_000
_BETACF_EPS = 1e-15
_FPMIN = 1e-300
_NORMAL_DF = 1e7  # above this many degrees of freedom the t distribution is the normal one


def normal_cdf(z: float) -> float:
    """Standard normal CDF, ``0.5 * erfc(-z / sqrt(2))`` (accurate in both tails)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (Numerical Recipes ``betacf``, Lentz)."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _FPMIN:
        d = _FPMIN
    d = 1.0 / d
    h = d
    for m in range(1, _BETACF_MAXIT + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = 1.0 + aa / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = 1.0 + aa / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _BETACF_EPS:
            return h
    raise ArithmeticError(f"betacf did not converge for a={a}, b={b}, x={x}")


def _betai(a: float, b: float, x: float, one_minus_x: float) -> float:
    """``I_x(a, b)`` with ``1 - x`` passed separately so it is not lost to cancellation."""
    if x <= 0.0:
        return 0.0
    if one_minus_x <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
        + a * math.log(x)
        + b * math.log(one_minus_x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, one_minus_x) / b


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if not (a > 0.0 and b > 0.0):
        raise ValueError(f"a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    return _betai(a, b, x, 1.0 - x)


def student_t_sf(t: float, df: float) -> float:
    """Upper tail ``P(T > t)`` of Student's t with ``df > 0`` (not necessarily integer) degrees.

    Uses ``P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2)``; above ``1e7`` degrees of freedom the normal
    distribution is used instead (the continued fraction would need too many terms).
    """
    if not df > 0.0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isnan(t):
        raise ValueError("t is NaN")
    if df > _NORMAL_DF:
        return normal_cdf(-t)
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    t2 = t * t
    denom = df + t2
    two_sided = _betai(0.5 * df, 0.5, df / denom, t2 / denom)
    return 0.5 * two_sided if t > 0.0 else 1.0 - 0.5 * two_sided


def student_t_cdf(t: float, df: float) -> float:
    """Student's t CDF ``P(T <= t)`` with ``df > 0`` degrees of freedom (see :func:`student_t_sf`)."""
    if not df > 0.0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isnan(t):
        raise ValueError("t is NaN")
    return student_t_sf(-t, df)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _as_finite_array(values: Sequence[float], name: str = "y") -> _FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (drop missing values first)")
    return arr


def _relative_base(preferred: float, values: _FloatArray) -> float:
    """A positive denominator for a relative change, or 0.0 when every value is 0."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if abs(preferred) > 1e-9 * scale:
        return abs(preferred)
    return float(np.mean(np.abs(values))) if values.size else 0.0


# --------------------------------------------------------------------------------------------
# Theil-Sen
# --------------------------------------------------------------------------------------------


def theil_sen(y: Sequence[float], x: Sequence[float] | None = None) -> tuple[float, float]:
    """Theil-Sen estimate ``(slope, intercept)`` of ``y`` against ``x`` (default ``0..n-1``).

    The slope is the median of ``(y_j - y_i) / (x_j - x_i)`` over all pairs ``i < j`` with
    ``x_i != x_j``; the intercept is ``median(y) - slope * median(x)`` (Sen / Conover). Needs at
    least two distinct ``x`` values; O(n^2) memory, fine for one value per run. Raises
    ``ValueError`` if the slope or intercept overflows (values near the float limit).
    """
    ya = _as_finite_array(y, "y")
    n = ya.size
    xa = np.arange(n, dtype=np.float64) if x is None else _as_finite_array(x, "x")
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


# --------------------------------------------------------------------------------------------
# Mann-Kendall
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NullDistribution:
    """Exact null distribution of S: sorted support, cumulative counts, total count."""

    support: tuple[int, ...]
    cumulative: tuple[int, ...]  # cumulative[k] = #{permutations with S <= support[k]}
    total: int

    def prob_less(self, s: int) -> tuple[int, int]:
        """``#{S < s}`` and ``total``."""
        k = bisect_left(self.support, s)
        return (self.cumulative[k - 1] if k > 0 else 0), self.total

    def prob_greater(self, s: int) -> tuple[int, int]:
        """``#{S > s}`` and ``total``."""
        k = bisect_right(self.support, s)
        below_or_equal = self.cumulative[k - 1] if k > 0 else 0
        return self.total - below_or_equal, self.total


@cache
def _mahonian_distribution(n: int) -> _NullDistribution:
    """Null distribution of S without ties, from the Mahonian numbers (exact Python ints).

    ``counts[k]`` = number of permutations of n items with k inversions, built by the standard DP
    ``M(m, k) = sum_{j=0}^{min(k, m-1)} M(m-1, k-j)`` with a running window sum. Then
    ``S = N - 2k`` with ``N = n(n-1)/2``.
    """
    counts = [1]
    for m in range(2, n + 1):
        new_len = len(counts) + m - 1
        new = [0] * new_len
        window = 0
        for k in range(new_len):
            if k < len(counts):
                window += counts[k]
            if k - m >= 0:
                window -= counts[k - m]
            new[k] = window
        counts = new
    n_pairs = n * (n - 1) // 2
    # support ascending in S  <=>  descending in k
    support = tuple(n_pairs - 2 * k for k in range(n_pairs, -1, -1))
    cumulative = tuple(itertools.accumulate(reversed(counts)))
    return _NullDistribution(support, cumulative, math.factorial(n))


@lru_cache(maxsize=256)
def _tied_distribution(group_sizes: tuple[int, ...]) -> _NullDistribution:
    """Exact null distribution of S for a series with the given tie-group sizes.

    Under H0 every ordering of the observed values is equally likely; this enumerates all n!
    orderings of a canonical series with those ties (n <= EXACT_TIES_MAX_N, at most 40,320 rows).
    """
    base = np.repeat(np.arange(len(group_sizes)), group_sizes)
    n = int(base.size)
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int8).reshape(-1, n)
    series = base[perms]
    i, j = np.triu_indices(n, k=1)
    s_values = np.sign(series[:, j] - series[:, i]).sum(axis=1)
    support, counts = np.unique(s_values, return_counts=True)
    cumulative = tuple(itertools.accumulate(int(c) for c in counts))
    return _NullDistribution(tuple(int(s) for s in support), cumulative, math.factorial(n))


def _mk_statistic(arr: _FloatArray) -> int:
    n = arr.size
    if n <= 1000:
        i, j = np.triu_indices(n, k=1)
        return int(np.sign(arr[j] - arr[i]).sum())
    return int(sum(int(np.sign(arr[k + 1 :] - arr[k]).sum()) for k in range(n - 1)))


def mann_kendall(y: Sequence[float]) -> MKResult:
    """Mann-Kendall trend test with one-sided confidences.

    ``S = sum_{i<j} sign(y_j - y_i)``. The null distribution of S (all orderings equally likely) is

    * exact from the Mahonian numbers when there are no ties and ``n <= EXACT_MAX_N`` (60);
    * exact by enumeration when there are ties and ``n <= EXACT_TIES_MAX_N`` (8);
    * otherwise normal with ``Var S = [n(n-1)(2n+5) - sum_t t(t-1)(2t+5)] / 18`` (tie groups of
      size t) and a continuity correction of 1: ``P(S >= s) ~ 1 - Phi((s - 1) / sd)`` and
      ``P(S <= s) ~ Phi((s + 1) / sd)``.

    ``confidence_increasing = 1 - P(S >= s)``, ``confidence_decreasing = 1 - P(S <= s)``. With fewer
    than two values, or all values equal, both confidences are 0 and both p-values 1.
    """
    arr = _as_finite_array(y)
    n = int(arr.size)
    _, group_counts = np.unique(arr, return_counts=True)
    has_ties = bool(np.any(group_counts > 1))
    tie_term = float(sum(int(t) * (int(t) - 1) * (2 * int(t) + 5) for t in group_counts))
    var_s = (n * (n - 1) * (2 * n + 5) - tie_term) / 18.0
    if n < 2 or group_counts.size == 1:
        return MKResult(0, n, 0.0, 1.0, 1.0, 0.0, 0.0, "degenerate", has_ties)
    s = _mk_statistic(arr)

    dist: _NullDistribution | None = None
    method: MKMethod
    if not has_ties and n <= EXACT_MAX_N:
        dist, method = _mahonian_distribution(n), "exact"
    elif has_ties and n <= EXACT_TIES_MAX_N:
        dist, method = _tied_distribution(tuple(sorted(int(t) for t in group_counts))), "exact_ties"
    else:
        method = "normal"

    if dist is not None:
        less, total = dist.prob_less(s)  # P(S < s) = 1 - P(S >= s)
        greater, _ = dist.prob_greater(s)  # P(S > s) = 1 - P(S <= s)
        conf_inc = less / total  # int / int: correctly rounded
        conf_dec = greater / total
        p_inc = (total - less) / total
        p_dec = (total - greater) / total
    else:
        sd = math.sqrt(var_s)
        conf_inc = normal_cdf((s - 1) / sd)
        conf_dec = normal_cdf((-s - 1) / sd)
        p_inc = normal_cdf(-(s - 1) / sd)
        p_dec = normal_cdf((s + 1) / sd)
    return MKResult(s, n, var_s, p_inc, p_dec, conf_inc, conf_dec, method, has_ties)


# --------------------------------------------------------------------------------------------
# Welch step detector
# --------------------------------------------------------------------------------------------


def _welch_from_moments(
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


def _pooled_p(
    n_a: int, mean_a: float, var_a: float, n_b: int, mean_b: float, var_b: float
) -> float:
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
    aa = _as_finite_array(a, "a")
    ba = _as_finite_array(b, "b")
    if aa.size < 2 or ba.size < 2:
        raise ValueError("each sample needs at least 2 values")
    return _welch_from_moments(
        int(aa.size),
        float(aa.mean()),
        float(aa.var(ddof=1)),
        int(ba.size),
        float(ba.mean()),
        float(ba.var(ddof=1)),
    )


def welch_step(
    y: Sequence[float], min_segment: int = DEFAULT_MIN_SEGMENT, *, log_scale: bool = False
) -> StepResult | None:
    """The best single split of ``y`` into a before and an after segment, by Welch's t-test.

    Every split with both segments of at least ``min_segment`` (>= 2) values is tried. A split's
    p-value is Welch's two-sided p (Welch-Satterthwaite df), guarded by Student's pooled-variance
    p: ``p = max(p_welch, p_pooled)``. The guard is the calibrated correction for taking the best
    of many splits: Welch's test is strongly anti-conservative for a 3-value segment against a long
    one (about 9x its nominal rate at alpha = 0.001 under a flat normal series), and the edge splits
    then dominate the false change points. The pooled test is exact for a flat normal series, and
    on a balanced split its t equals Welch's (with at least as many df), so the guard leaves the
    splits where a mid-history step shows as they are. A Bonferroni correction over the splits was
    measured and rejected: it misses about a quarter of the 30% steps the detector is for
    (docs/trends.md). The smallest p wins (ties: larger |t|, then the earlier index).

    With ``log_scale=True`` the tests run on ``log(y)`` (all values must be positive): the right
    scale for multiplicative noise such as latency's. ``mean_before``/``mean_after`` and
    ``relative_change`` are always arithmetic means of ``y`` itself:
    ``relative_change = (mean_after - mean_before) / base`` with ``base = |mean_before|``, or the
    mean |value| of the series when ``mean_before`` is 0 (0.0 if that is 0 too). Returns ``None``
    when the series is too short for any split.
    """
    if min_segment < 2:
        raise ValueError("min_segment must be at least 2 (a segment needs a variance)")
    raw = _as_finite_array(y)
    n = int(raw.size)
    if n < 2 * min_segment:
        return None
    if log_scale:
        if not np.all(raw > 0.0):
            raise ValueError("log_scale needs every value to be positive")
        arr = np.log(raw)
    else:
        arr = raw
    # Moments of every prefix/suffix from centred cumulative sums (centring keeps them accurate).
    centred = arr - arr.mean()
    c1 = np.concatenate(([0.0], np.cumsum(centred))).tolist()
    c2 = np.concatenate(([0.0], np.cumsum(centred * centred))).tolist()
    # arr[:k] is constant iff k <= prefix_constant_until; arr[k:] iff k >= suffix_constant_from.
    differs_first = np.flatnonzero(arr != arr[0])
    prefix_constant_until = int(differs_first[0]) if differs_first.size else n
    differs_last = np.flatnonzero(arr != arr[-1])
    suffix_constant_from = int(differs_last[-1]) + 1 if differs_last.size else 0

    best: tuple[float, float, int] | None = None  # (p, -|t|, k): smallest wins
    best_stats = (0.0, 0.0, 1.0, 1.0)  # (t, df, p_welch, p_pooled)
    splits = range(min_segment, n - min_segment + 1)
    for k in splits:
        n_a, n_b = k, n - k
        sum_a, sum_b = c1[k], c1[n] - c1[k]
        mean_a, mean_b = sum_a / n_a, sum_b / n_b
        var_a = (
            0.0 if k <= prefix_constant_until else max(0.0, (c2[k] - sum_a * mean_a) / (n_a - 1))
        )
        var_b = (
            0.0
            if k >= suffix_constant_from
            else max(0.0, (c2[n] - c2[k] - sum_b * mean_b) / (n_b - 1))
        )
        t, df, p_welch = _welch_from_moments(n_a, mean_a, var_a, n_b, mean_b, var_b)
        if best is not None and (p_welch, -abs(t), k) > best:
            continue  # the guarded p is at least p_welch: this split cannot win
        p_pooled = _pooled_p(n_a, mean_a, var_a, n_b, mean_b, var_b)
        key = (max(p_welch, p_pooled), -abs(t), k)
        if best is None or key < best:
            best = key
            best_stats = (t, df, p_welch, p_pooled)
    assert best is not None
    index = best[2]
    t, df, p_welch, p_pooled = best_stats
    mean_before = float(raw[:index].mean())
    mean_after = float(raw[index:].mean())
    base = _relative_base(mean_before, raw)
    rel = (mean_after - mean_before) / base if base > 0.0 else 0.0
    return StepResult(
        index=index,
        p_value=best[0],
        p_welch=p_welch,
        p_pooled=p_pooled,
        t=t,
        df=df,
        mean_before=mean_before,
        mean_after=mean_after,
        relative_change=rel,
        n_splits=len(splits),
        log_scale=log_scale,
    )


# --------------------------------------------------------------------------------------------
# The whole analysis
# --------------------------------------------------------------------------------------------


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
    min_change: float = DEFAULT_MIN_CHANGE,
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
    step_p: float = DEFAULT_STEP_P,
    min_points: int = DEFAULT_MIN_POINTS,
    min_segment: int = DEFAULT_MIN_SEGMENT,
    step_scale: Literal["auto", "log", "linear"] = "auto",
) -> TrendOutcome:
    """Direction, size, confidence and change point of one metric across runs.

    ``values`` holds one summary per run in run order. ``None``, NaN and ±inf are missing values:
    they are dropped, but the remaining values keep their run positions as the x of the Theil-Sen
    fit and ``change_point`` indexes the input sequence. Fewer than ``max(min_points, 2)`` finite
    values give ``insufficient_data``.

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
    if n < max(min_points, 2):
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
    base = _relative_base(fitted_start, ya)
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
        and abs(relative_change) >= min_change
        and confidence >= confidence_threshold
    ):
        direction = _judge(slope_scaled, higher_is_better)

    positive = bool(np.all(ya > 0.0))
    if step_scale == "log" and not positive:
        raise ValueError("step_scale='log' needs every value to be positive")
    log_scale = step_scale == "log" or (step_scale == "auto" and positive)
    step = welch_step(scaled, min_segment, log_scale=log_scale)
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
    if step is not None and step.p_value <= step_p and abs(step.relative_change) >= min_change:
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
