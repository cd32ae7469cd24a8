"""The step detector: the best single split of a series into a before and an after segment.

Every split with both segments of at least ``min_segment`` values is tried and the smallest p
wins, each split's Welch p guarded by the pooled-variance p (``max`` of the two), on ``log(y)``
when every value is positive. The guard is the correction for choosing the best of many splits,
calibrated by simulation (docs/trends.md); Bonferroni was too costly in power.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.profile.stats.arrays import as_finite_array, relative_base
from stages.profile.stats.welch import pooled_p, welch_from_moments

__all__ = ["StepResult", "welch_step"]


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


def welch_step(
    y: Sequence[float], min_segment: int, *, log_scale: bool = False
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
    raw = as_finite_array(y)
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
        t, df, p_welch = welch_from_moments(n_a, mean_a, var_a, n_b, mean_b, var_b)
        if best is not None and (p_welch, -abs(t), k) > best:
            continue  # the guarded p is at least p_welch: this split cannot win
        p_pooled = pooled_p(n_a, mean_a, var_a, n_b, mean_b, var_b)
        key = (max(p_welch, p_pooled), -abs(t), k)
        if best is None or key < best:
            best = key
            best_stats = (t, df, p_welch, p_pooled)
    assert best is not None
    index = best[2]
    t, df, p_welch, p_pooled = best_stats
    mean_before = float(raw[:index].mean())
    mean_after = float(raw[index:].mean())
    base = relative_base(mean_before, raw)
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
