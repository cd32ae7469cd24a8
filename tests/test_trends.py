"""The trend statistics (stages/profile/stats/, trends.py) on plain arrays: maths, edge cases, simulation."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from schemas import TrendSettings
from stages.profile.stats.mann_kendall import EXACT_MAX_N, mann_kendall
from stages.profile.stats.special import (
    normal_cdf,
    regularized_incomplete_beta,
    student_t_cdf,
    student_t_sf,
)
from stages.profile.stats.step import welch_step
from stages.profile.stats.theil_sen import theil_sen
from stages.profile.stats.welch import welch_t_test
from stages.profile.trends import analyze_trend, min_runs_for_direction

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------------------------
# Mann-Kendall
# --------------------------------------------------------------------------------------------


def _brute_force_confidences(y: list[float]) -> tuple[float, float]:
    """(1 - P(S >= s), 1 - P(S <= s)) by enumerating every ordering of the values."""

    def s_of(seq: tuple[float, ...]) -> int:
        return sum(
            (seq[j] > seq[i]) - (seq[j] < seq[i])
            for i in range(len(seq))
            for j in range(i + 1, len(seq))
        )

    s_obs = s_of(tuple(y))
    all_s = [s_of(p) for p in itertools.permutations(y)]
    total = len(all_s)
    return (
        sum(s < s_obs for s in all_s) / total,
        sum(s > s_obs for s in all_s) / total,
    )


@pytest.mark.parametrize(("n", "expected"), [(3, 0.833), (4, 0.958), (5, 0.992)])
def test_mk_best_reachable_confidence_matches_design(n: int, expected: float) -> None:
    up = mann_kendall([float(i) for i in range(n)])
    down = mann_kendall([float(-i) for i in range(n)])
    assert up.method == "exact"
    assert up.confidence_increasing == pytest.approx(1 - 1 / math.factorial(n), abs=1e-15)
    assert round(up.confidence_increasing, 3) == expected
    assert round(down.confidence_decreasing, 3) == expected
    assert up.confidence_decreasing == 0.0
    assert up.p_increasing == pytest.approx(1 / math.factorial(n))


def test_mk_n5_threshold_needs_a_perfect_series() -> None:
    # at n = 5 only the strictly monotone series reaches 0.99: one swap gives S = 8 and 0.958
    assert mann_kendall([1.0, 2.0, 3.0, 4.0, 5.0]).confidence_increasing >= 0.99
    assert mann_kendall([2.0, 1.0, 3.0, 4.0, 5.0]).confidence_increasing == pytest.approx(
        1 - 5 / 120
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=7, unique=True))
def test_mk_exact_equals_enumeration_without_ties(y: list[float]) -> None:
    result = mann_kendall(y)
    assert result.method == "exact"
    inc, dec = _brute_force_confidences(y)
    assert result.confidence_increasing == pytest.approx(inc, abs=1e-12)
    assert result.confidence_decreasing == pytest.approx(dec, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3), min_size=3, max_size=7))
def test_mk_exact_with_ties_equals_enumeration(ints: list[int]) -> None:
    y = [float(v) for v in ints]
    assume(len(set(y)) > 1)
    result = mann_kendall(y)
    inc, dec = _brute_force_confidences(y)
    assert result.method == ("exact_ties" if len(set(y)) < len(y) else "exact")
    assert result.confidence_increasing == pytest.approx(inc, abs=1e-12)
    assert result.confidence_decreasing == pytest.approx(dec, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(st.lists(finite, min_size=0, max_size=80))
def test_mk_invariants(y: list[float]) -> None:
    result = mann_kendall(y)
    assert 0.0 <= result.confidence_increasing <= 1.0
    assert 0.0 <= result.confidence_decreasing <= 1.0
    assert abs(result.s) <= len(y) * (len(y) - 1) // 2
    if result.method != "degenerate":
        assert result.confidence_increasing + result.p_increasing == pytest.approx(1.0)
        assert result.confidence_decreasing + result.p_decreasing == pytest.approx(1.0)
    flipped = mann_kendall([-v for v in y])
    assert flipped.s == -result.s
    assert flipped.confidence_decreasing == pytest.approx(result.confidence_increasing)


def test_mk_exact_and_normal_agree_at_the_switch() -> None:
    rng = np.random.default_rng(0)
    n = EXACT_MAX_N
    y = np.arange(n) * 0.02 + rng.standard_normal(n)
    exact = mann_kendall(y.tolist())
    assert exact.method == "exact"
    sd = math.sqrt(exact.var_s)
    approx = normal_cdf((exact.s - 1) / sd)
    assert exact.confidence_increasing == pytest.approx(approx, abs=2e-3)
    assert mann_kendall((np.arange(n + 1) + 0.0).tolist()).method == "normal"


def test_mk_degenerate_inputs() -> None:
    for y in ([], [1.0], [2.0, 2.0, 2.0]):
        result = mann_kendall(y)
        assert result.method == "degenerate"
        assert result.confidence_increasing == result.confidence_decreasing == 0.0


def test_mk_large_n_with_ties_uses_tie_corrected_variance() -> None:
    y = [float(i // 2) for i in range(20)]  # ten pairs of ties
    result = mann_kendall(y)
    assert result.method == "normal"
    assert result.has_ties
    assert result.var_s == pytest.approx((20 * 19 * 45 - 10 * 2 * 1 * 9) / 18)
    assert result.confidence_increasing > 0.999


# --------------------------------------------------------------------------------------------
# Theil-Sen
# --------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-1000, 1000), finite), min_size=2, max_size=25), st.booleans()
)
def test_theil_sen_is_the_median_of_pairwise_slopes(
    points: list[tuple[int, float]], use_x: bool
) -> None:
    ys = [p[1] for p in points]
    xs = [p[0] / 8 for p in points] if use_x else [float(i) for i in range(len(points))]
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    assume(slopes)
    slope, intercept = theil_sen(ys, xs if use_x else None)
    expected = statistics.median(slopes)
    assert math.isclose(slope, expected, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(
        intercept, statistics.median(ys) - slope * statistics.median(xs), rel_tol=1e-9, abs_tol=1e-6
    )


def test_theil_sen_recovers_a_line_and_ignores_an_outlier() -> None:
    x = np.arange(10.0)
    y = 3.0 + 0.5 * x
    assert theil_sen(y.tolist()) == pytest.approx((0.5, 3.0))
    y[4] = 1000.0
    slope, _ = theil_sen(y.tolist())
    assert slope == pytest.approx(0.5)


def test_theil_sen_rejects_degenerate_x() -> None:
    with pytest.raises(ValueError, match="distinct x"):
        theil_sen([1.0, 2.0], [3.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        theil_sen([1.0, float("nan")])
    with pytest.raises(ValueError, match="overflow"):
        theil_sen([0.0, 4.0], [0.0, 2.2250738585072014e-308])


# --------------------------------------------------------------------------------------------
# Special functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "df", "cdf"),
    [
        (2.228, 10.0, 0.975),  # t tables
        (3.169, 10.0, 0.995),
        (2.015, 5.0, 0.95),
        (12.706, 1.0, 0.975),
        (1.96, 1e6, 0.975),
        (1.96, 1e9, 0.975),  # normal branch
        (0.0, 3.0, 0.5),
    ],
)
def test_student_t_cdf_known_values(t: float, df: float, cdf: float) -> None:
    assert student_t_cdf(t, df) == pytest.approx(cdf, abs=1e-4)
    assert student_t_cdf(-t, df) == pytest.approx(1 - cdf, abs=1e-4)


@given(st.floats(min_value=-1e3, max_value=1e3))
def test_student_t_closed_forms(t: float) -> None:
    # df = 1 is Cauchy, df = 2 has a closed form
    assert student_t_cdf(t, 1.0) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert student_t_cdf(t, 2.0) == pytest.approx(0.5 + t / (2 * math.sqrt(t * t + 2)), abs=1e-13)


@given(st.floats(min_value=-50, max_value=50), st.floats(min_value=0.1, max_value=500))
def test_student_t_symmetry_and_range(t: float, df: float) -> None:
    cdf = student_t_cdf(t, df)
    assert 0.0 <= cdf <= 1.0
    assert cdf + student_t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)
    assert student_t_sf(t, df) == pytest.approx(1.0 - cdf, abs=1e-12)


def test_student_t_cdf_non_integer_df_against_quadrature() -> None:
    df, t = 2.5, 1.3
    grid = np.linspace(0.0, t, 200_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid * grid / df))
    integral = float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid)))
    assert student_t_cdf(t, df) == pytest.approx(0.5 + integral, abs=1e-9)


def test_student_t_tail_keeps_relative_precision() -> None:
    # P(T > 30) with df = 10 is about 2.1e-11; it must not be lost to 1 - cdf cancellation
    sf = student_t_sf(30.0, 10.0)
    assert 1e-11 < sf < 1e-10


@given(
    st.floats(min_value=0.05, max_value=50),
    st.floats(min_value=0.05, max_value=50),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_incomplete_beta_symmetry(a: float, b: float, x: float) -> None:
    assume(1.0 - (1.0 - x) == x)  # 1 - x must be exact, or the identity is tested on rounding
    value = regularized_incomplete_beta(a, b, x)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(1.0 - regularized_incomplete_beta(b, a, 1.0 - x), abs=1e-10)


@given(st.floats(min_value=0.1, max_value=20), st.floats(min_value=0.0, max_value=1.0))
def test_incomplete_beta_closed_forms(a: float, x: float) -> None:
    assert regularized_incomplete_beta(a, 1.0, x) == pytest.approx(x**a, abs=1e-12)
    assert regularized_incomplete_beta(1.0, a, x) == pytest.approx(1 - (1 - x) ** a, abs=1e-12)
    assert regularized_incomplete_beta(a, a, 0.5) == pytest.approx(0.5, abs=1e-12)


def test_special_functions_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        regularized_incomplete_beta(0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        regularized_incomplete_beta(1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="df"):
        student_t_cdf(1.0, 0.0)
    assert normal_cdf(1.959964) == pytest.approx(0.975, abs=1e-7)


# --------------------------------------------------------------------------------------------
# Welch
# --------------------------------------------------------------------------------------------


def test_welch_t_test_matches_the_formula() -> None:
    a = [1.0, 2.0, 3.0, 4.0]
    b = [2.0, 4.0, 6.0, 8.0, 10.0]
    va, vb = statistics.variance(a), statistics.variance(b)
    se2 = va / 4 + vb / 5
    t_expected = (6.0 - 2.5) / math.sqrt(se2)
    df_expected = se2**2 / ((va / 4) ** 2 / 3 + (vb / 5) ** 2 / 4)
    t, df, p = welch_t_test(a, b)
    assert t == pytest.approx(t_expected)
    assert df == pytest.approx(df_expected)
    assert p == pytest.approx(2 * student_t_sf(t_expected, df_expected))


def test_welch_step_finds_a_clean_step() -> None:
    rng = np.random.default_rng(1)
    y = np.where(np.arange(16) >= 9, 150.0, 100.0) * np.exp(0.02 * rng.standard_normal(16))
    step = welch_step(y.tolist(), 3)
    assert step is not None
    assert step.index == 9
    assert step.p_value < 1e-6
    assert step.p_value == max(step.p_welch, step.p_pooled)
    assert step.relative_change == pytest.approx(0.5, abs=0.05)
    assert step.n_splits == 16 - 2 * 3 + 1


def test_welch_step_edge_cases() -> None:
    assert welch_step([1.0] * 5, 3) is None  # too short for two segments of 3
    flat = welch_step([2.0] * 8, 3)
    assert flat is not None
    assert flat.p_value == 1.0
    assert flat.relative_change == 0.0
    jump = welch_step([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3)
    assert jump is not None
    assert (jump.index, jump.p_value) == (4, 0.0)
    assert jump.relative_change == pytest.approx(1.0 / (3 / 7))  # mean_before 0: mean |y| base
    with pytest.raises(ValueError, match="positive"):
        welch_step([1.0, 0.0, 2.0, 3.0, 4.0, 5.0], 3, log_scale=True)
    with pytest.raises(ValueError, match="min_segment"):
        welch_step([1.0] * 10, min_segment=1)


# --------------------------------------------------------------------------------------------
# analyze_trend
# --------------------------------------------------------------------------------------------


def test_two_points_are_insufficient() -> None:
    outcome = analyze_trend([100.0, 200.0], higher_is_better=False)
    assert outcome.direction == "insufficient_data"
    assert outcome.relative_change is None
    assert outcome.confidence == 0.0
    assert outcome.n_points == 2


def test_missing_values_are_dropped_before_counting() -> None:
    outcome = analyze_trend([100.0, None, float("nan"), 120.0, float("inf")], higher_is_better=True)
    assert outcome.direction == "insufficient_data"
    assert outcome.n_points == 2


@pytest.mark.parametrize("value", [0.0, 5.0, -3.0])
def test_constant_series_is_stable_with_zero_confidence(value: float) -> None:
    outcome = analyze_trend([value] * 12, higher_is_better=True)
    assert outcome.direction == "stable"
    assert outcome.relative_change == 0.0
    assert outcome.confidence == 0.0
    assert outcome.change_point is None


def test_five_monotone_runs_give_a_direction_and_four_do_not() -> None:
    five = analyze_trend([100.0, 110.0, 121.0, 133.0, 146.0], higher_is_better=False)
    assert five.direction == "degrading"
    assert five.confidence == pytest.approx(119 / 120)
    assert five.relative_change == pytest.approx(0.46, abs=0.01)
    better = analyze_trend([100.0, 110.0, 121.0, 133.0, 146.0], higher_is_better=True)
    assert better.direction == "improving"
    four = analyze_trend([100.0, 110.0, 121.0, 133.0], higher_is_better=False)
    assert four.direction == "stable"
    assert four.confidence == pytest.approx(23 / 24)


@pytest.mark.parametrize(
    ("trend", "runs"),
    [
        (TrendSettings(), 5),
        (TrendSettings(confidence_threshold=0.95), 4),
        (TrendSettings(confidence_threshold=0.8), 3),
        (TrendSettings(confidence_threshold=0.4, min_points=2), 2),
        (TrendSettings(confidence_threshold=0.4, min_points=7), 7),
        (TrendSettings(confidence_threshold=1.0), 19),
    ],
)
def test_the_runs_a_direction_needs_follow_the_settings(trend: TrendSettings, runs: int) -> None:
    assert min_runs_for_direction(trend) == runs
    climb = [100.0 * 1.1**i for i in range(runs)]
    assert analyze_trend(climb, higher_is_better=False, settings=trend).direction == "degrading"
    shorter = analyze_trend(climb[:-1], higher_is_better=False, settings=trend)
    assert shorter.direction in ("stable", "insufficient_data")


def test_small_change_is_stable_however_confident() -> None:
    outcome = analyze_trend([100.0 + 0.1 * i for i in range(20)], higher_is_better=True)
    assert outcome.confidence > 0.999
    assert outcome.relative_change == pytest.approx(0.019)
    assert outcome.direction == "stable"


def test_missing_values_keep_run_positions() -> None:
    values: list[float | None] = [
        100.0,
        101.0,
        None,
        99.0,
        100.0,
        100.5,
        150.0,
        151.0,
        149.0,
        150.5,
    ]
    outcome = analyze_trend(values, higher_is_better=False)
    assert outcome.n_points == 9
    assert outcome.change_point == 6  # index into the input, missing value included
    assert outcome.change_point_direction == "degrading"
    assert outcome.step_relative_change == pytest.approx(0.5, abs=0.02)
    assert outcome.change_point_p is not None
    assert outcome.change_point_p <= 0.001
    improving = analyze_trend(values, higher_is_better=True)
    assert improving.change_point_direction == "improving"


def test_zeros_and_a_rise_from_zero_stay_finite() -> None:
    outcome = analyze_trend([0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3], higher_is_better=False)
    assert outcome.relative_change is not None
    assert math.isfinite(outcome.relative_change)
    errors = analyze_trend([0.0] * 6 + [0.05] * 6, higher_is_better=False)
    assert errors.change_point == 6
    assert errors.change_point_direction == "degrading"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), max_size=30),
    st.booleans(),
)
def test_analyze_trend_invariants(values: list[float | None], higher_is_better: bool) -> None:
    outcome = analyze_trend(values, higher_is_better=higher_is_better)
    n = sum(v is not None for v in values)
    assert outcome.n_points == n
    assert 0.0 <= outcome.confidence <= 1.0
    if n < 3:
        assert outcome.direction == "insufficient_data"
        return
    assert outcome.relative_change is not None
    assert math.isfinite(outcome.relative_change)
    if n <= 4:  # the best reachable confidence is 0.958 < 0.99: a direction needs 5 runs
        assert outcome.direction == "stable"
    if outcome.direction != "stable":
        assert outcome.confidence >= 0.99
        assert abs(outcome.relative_change) >= 0.05
    if outcome.change_point is not None:
        assert values[outcome.change_point] is not None
        assert outcome.change_point_p is not None
        assert outcome.change_point_p <= 0.001
    swapped = analyze_trend(values, higher_is_better=not higher_is_better)
    opposite = {"improving": "degrading", "degrading": "improving", "stable": "stable"}
    assert swapped.direction == opposite[outcome.direction]


@settings(max_examples=60, deadline=None)
@given(st.lists(positive, min_size=3, max_size=25), st.floats(min_value=0.01, max_value=1e3))
def test_analyze_trend_is_scale_invariant(values: list[float], scale: float) -> None:
    scaled = [v * scale for v in values]
    signs = [(x > y) - (x < y) for x, y in itertools.combinations(values, 2)]
    assume(
        signs == [(x > y) - (x < y) for x, y in itertools.combinations(scaled, 2)]
    )  # no new ties
    a = analyze_trend(values, higher_is_better=True)
    b = analyze_trend(scaled, higher_is_better=True)
    assume(a.relative_change is not None and abs(abs(a.relative_change) - 0.05) > 1e-6)
    assert b.direction == a.direction
    assert b.confidence == a.confidence  # Mann-Kendall only sees the order
    assert b.relative_change == pytest.approx(a.relative_change, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------------
# Simulation (issue 6): 1,000 series per case, 10% log-normal noise, fixed seeds
# The seeds and generator are those of bench/trend_calibration.py, so the rates are the ones in
# docs/trends.md. Measured (1,000 series): flat false direction 1.5% / 1.3% / 2.0% at n = 5 / 10 /
# 20; drift called degrading 98.5%; step found as a change point 95.1% (the step's true rate is
# about 96%, see docs/trends.md: this bound has little margin by design of the thresholds).
# --------------------------------------------------------------------------------------------


def _simulate(kind: str, n: int, seed: int, n_series: int = 1000) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    noise = np.exp(0.10 * rng.standard_normal((n_series, n)))
    runs = np.arange(n)
    signal = {
        "flat": np.ones(n),
        "drift": 1.02**runs,
        "step": np.where(runs >= 10, 1.3, 1.0),
    }[kind]
    out: npt.NDArray[np.float64] = 100.0 * signal * noise
    return out


@pytest.mark.parametrize(("n", "seed"), [(5, 105), (10, 110), (20, 120)])
def test_simulation_flat_series_rarely_get_a_direction(n: int, seed: int) -> None:
    series = _simulate("flat", n, seed)
    outcomes = [analyze_trend(row.tolist(), higher_is_better=False) for row in series]
    false_rate = sum(o.direction != "stable" for o in outcomes) / len(outcomes)
    assert false_rate <= 0.05
    false_change_points = sum(o.change_point is not None for o in outcomes) / len(outcomes)
    assert false_change_points <= 0.01  # measured 0.3% at n = 10 and 20


def test_simulation_latency_drift_is_called_degrading() -> None:
    series = _simulate("drift", 20, 220)
    outcomes = [analyze_trend(row.tolist(), higher_is_better=False) for row in series]
    assert sum(o.direction == "degrading" for o in outcomes) / len(outcomes) >= 0.95
    assert not any(o.direction == "improving" for o in outcomes)


def test_simulation_step_is_found_as_a_change_point() -> None:
    series = _simulate("step", 20, 320)
    outcomes = [analyze_trend(row.tolist(), higher_is_better=False) for row in series]
    found = [o for o in outcomes if o.change_point is not None]
    assert len(found) / len(outcomes) >= 0.95
    assert all(o.change_point_direction == "degrading" for o in found)
    near = sum(abs(o.change_point - 10) <= 2 for o in found if o.change_point is not None)
    assert near / len(found) >= 0.9
