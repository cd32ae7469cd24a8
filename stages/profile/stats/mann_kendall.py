"""Mann-Kendall: how confident a monotone trend is, with one-sided confidences.

The null distribution of S is exact whenever it can be computed exactly, i.e. without ties for
``n <= EXACT_MAX_N`` (Mahonian numbers: the number of inversions of a random permutation) and with
ties for ``n <= EXACT_TIES_MAX_N`` (enumeration of every permutation of the observed ranks);
otherwise it is the normal approximation with the tie-corrected variance and a continuity
correction. "Confidence" is one-sided: ``confidence_increasing = 1 - P(S >= s_obs | H0)``. For a
strictly increasing series of ``n`` values this is ``1 - 1/n!``: 0.833 at n = 3, 0.958 at n = 4
and 0.992 at n = 5.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Literal

import numpy as np

from stages.profile.stats.arrays import FloatArray, as_finite_array
from stages.profile.stats.special import normal_cdf

__all__ = ["EXACT_MAX_N", "EXACT_TIES_MAX_N", "MKMethod", "MKResult", "mann_kendall"]

MKMethod = Literal["exact", "exact_ties", "normal", "degenerate"]

EXACT_MAX_N = 60
"""Largest n for which the tie-free Mann-Kendall null distribution is computed exactly."""
EXACT_TIES_MAX_N = 8
"""Largest n for which a tied series gets the exact (enumerated) null distribution."""


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


def _mk_statistic(arr: FloatArray) -> int:
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
    arr = as_finite_array(y)
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
