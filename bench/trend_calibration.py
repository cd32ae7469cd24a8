"""Calibration of the trend thresholds (issue 6, DESIGN.md "Trends") by simulation.

Every series is ``base * exp(0.10 * Z)`` per run (10% log-normal noise, base 100) times the signal:
flat, a 2%-per-run drift (``1.02 ** i``) or a 30% step at run index 10 (``1.3`` from index 10 on).
Each case has its own fixed seed and 1,000 series; the thresholds are the defaults of
``schemas.TrendSettings`` (what ``stages.profile.trends.analyze_trend`` uses without a config). Rates come with a Wilson 95% interval.

    /work/venv/bin/python bench/trend_calibration.py [--series 1000] [--markdown]

The ablation table compares the step detector's guarded p-value with plain Welch and with a
Bonferroni correction over the splits, on the same series.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas import TrendSettings  # noqa: E402
from stages.profile.stats.welch import welch_t_test  # noqa: E402
from stages.profile.trends import DEFAULT_TRENDS, TrendOutcome, analyze_trend  # noqa: E402

BASE = 100.0
SIGMA = 0.10
STEP_INDEX = 10


def simulate(
    kind: str, n: int, n_series: int, seed: int, *, sigma: float = SIGMA
) -> npt.NDArray[np.float64]:
    """``n_series`` series of ``n`` runs: kind is ``flat``, ``drift`` (2%/run) or ``step`` (30%)."""
    rng = np.random.default_rng(seed)
    noise = np.exp(sigma * rng.standard_normal((n_series, n)))
    runs = np.arange(n)
    signal: npt.NDArray[np.float64]
    if kind == "flat":
        signal = np.ones(n)
    elif kind == "drift":
        signal = np.power(1.02, runs, dtype=np.float64)
    elif kind == "step":
        signal = np.where(runs >= STEP_INDEX, 1.3, 1.0)
    else:
        raise ValueError(kind)
    out: npt.NDArray[np.float64] = BASE * signal * noise
    return out


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    n: int
    seed: int
    what: str
    hit: Callable[[TrendOutcome], bool]
    bound: str


CASES = (
    Case("flat n=5", "flat", 5, 105, "false direction", lambda o: o.direction != "stable", "<= 5%"),
    Case(
        "flat n=10", "flat", 10, 110, "false direction", lambda o: o.direction != "stable", "<= 5%"
    ),
    Case(
        "flat n=20", "flat", 20, 120, "false direction", lambda o: o.direction != "stable", "<= 5%"
    ),
    Case("flat n=40", "flat", 40, 140, "false direction", lambda o: o.direction != "stable", "-"),
    Case(
        "drift 2%/run n=20",
        "drift",
        20,
        220,
        "called degrading",
        lambda o: o.direction == "degrading",
        ">= 95%",
    ),
    Case(
        "step 30% @10 n=20",
        "step",
        20,
        320,
        "change point found",
        lambda o: o.change_point is not None,
        ">= 95%",
    ),
    Case(
        "step 30% @10 n=20",
        "step",
        20,
        320,
        "change point at 10",
        lambda o: o.change_point == STEP_INDEX,
        "-",
    ),
    Case(
        "step 30% @10 n=20",
        "step",
        20,
        320,
        "change point 10 +/- 1",
        lambda o: o.change_point is not None and abs(o.change_point - STEP_INDEX) <= 1,
        "-",
    ),
    Case(
        "step 30% @10 n=20",
        "step",
        20,
        320,
        "called degrading",
        lambda o: o.direction == "degrading",
        "-",
    ),
    Case(
        "flat n=10",
        "flat",
        10,
        110,
        "false change point",
        lambda o: o.change_point is not None,
        "-",
    ),
    Case(
        "flat n=20",
        "flat",
        20,
        120,
        "false change point",
        lambda o: o.change_point is not None,
        "-",
    ),
    Case(
        "flat n=40",
        "flat",
        40,
        140,
        "false change point",
        lambda o: o.change_point is not None,
        "-",
    ),
    Case(
        "drift 2%/run n=20",
        "drift",
        20,
        220,
        "change point found",
        lambda o: o.change_point is not None,
        "-",
    ),
)


def wilson(hits: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if total == 0:
        return 0.0, 1.0
    p = hits / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _outcomes(kind: str, n: int, n_series: int, seed: int) -> list[TrendOutcome]:
    series = simulate(kind, n, n_series, seed)
    # latency-like metric: higher is worse
    return [analyze_trend(row.tolist(), higher_is_better=False) for row in series]


def calibration_rows(n_series: int) -> list[tuple[str, str, int, int, str]]:
    """``(case, measure, hits, total, bound)`` for every case (series shared between measures)."""
    cache: dict[tuple[str, int, int], list[TrendOutcome]] = {}
    rows = []
    for case in CASES:
        key = (case.kind, case.n, case.seed)
        if key not in cache:
            cache[key] = _outcomes(case.kind, case.n, n_series, case.seed)
        outcomes = cache[key]
        hits = sum(1 for o in outcomes if case.hit(o))
        rows.append((case.name, case.what, hits, len(outcomes), case.bound))
    return rows


def _split_ps(y: npt.NDArray[np.float64]) -> list[float]:
    min_segment = DEFAULT_TRENDS.min_segment
    values = y.tolist()
    return [
        welch_t_test(values[:k], values[k:])[2]
        for k in range(min_segment, y.size - min_segment + 1)
    ]


def ablation_rows(n_series: int) -> list[tuple[str, float, float, float, float]]:
    """Change-point rates at the default step_p: plain Welch, Bonferroni-Welch, guarded (linear,
    log); without min_change, so that only the step test decides."""
    alpha = DEFAULT_TRENDS.step_p
    no_min_change = TrendSettings(min_change=0.0)
    rows = []
    for name, kind, n, seed in (
        ("flat n=20: false change point", "flat", 20, 120),
        ("flat n=40: false change point", "flat", 40, 140),
        ("step 30% @10 n=20: found", "step", 20, 320),
    ):
        series = simulate(kind, n, n_series, seed)
        plain = bonf = guarded = guarded_linear = 0
        for row in series:
            ps = _split_ps(np.log(row))
            plain += min(ps) <= alpha
            bonf += min(ps) * len(ps) <= alpha
            outcome = analyze_trend(row.tolist(), higher_is_better=False, settings=no_min_change)
            guarded += outcome.change_point is not None
            linear = analyze_trend(
                row.tolist(), higher_is_better=False, settings=no_min_change, step_scale="linear"
            )
            guarded_linear += linear.change_point is not None
        rows.append(
            (
                name,
                plain / n_series,
                bonf / n_series,
                guarded_linear / n_series,
                guarded / n_series,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000, help="series per case (default 1000)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the ablation table")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(f"{args.series} series per case, 10% log-normal noise (sigma={SIGMA}), base {BASE:g}")
    d = DEFAULT_TRENDS
    print(
        f"defaults: min_change={d.min_change}, confidence_threshold={d.confidence_threshold}, "
        f"step_p={d.step_p}, min_segment={d.min_segment}\n"
    )
    header = f"{'case':<20} {'measure':<22} {'rate':>7}  {'95% CI':<15} {'bound':<6}"
    print(header)
    print("-" * len(header))
    for name, what, hits, total, bound in calibration_rows(args.series):
        lo, hi = wilson(hits, total)
        ci = f"[{lo:.1%}, {hi:.1%}]"
        print(f"{name:<20} {what:<22} {hits / total:>7.1%}  {ci:<15} {bound:<6}")

    if not args.no_ablation:
        print(f"\nablation: change points at p <= {DEFAULT_TRENDS.step_p} (no min_change)")
        header = (
            f"{'case':<32} {'Welch log':>10} {'Welch+Bonf. log':>16} "
            f"{'guarded linear':>15} {'guarded log (used)':>19}"
        )
        print(header)
        print("-" * len(header))
        for name, plain, bonf, guarded_linear, guarded in ablation_rows(args.series):
            print(
                f"{name:<32} {plain:>10.1%} {bonf:>16.1%} {guarded_linear:>15.1%} {guarded:>19.1%}"
            )
    print(f"\n{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
