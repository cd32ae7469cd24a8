"""Special functions for the tests' p-values: the normal CDF, the regularized incomplete beta
function and Student's t distribution through it (so no scipy dependency is needed)."""

from __future__ import annotations

import math

__all__ = ["normal_cdf", "regularized_incomplete_beta", "student_t_cdf", "student_t_sf"]

_BETACF_MAXIT = 100_000
_BETACF_EPS = 1e-15
_FPMIN = 1e-300
_NORMAL_DF = 1e7  # above this many degrees of freedom the t distribution is the normal one


def normal_cdf(z: float) -> float:
    """Standard normal CDF, ``0.5 * erfc(-z / sqrt(2))`` (accurate in both tails)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (Numerical Recipes ``betacf``, Lentz).

    The even and the odd step of each iteration are written out, not folded into a helper or an
    inner loop: either costs 3-5% of :func:`stages.profile.trends.analyze_trend` (measured), and
    the step detector evaluates this for every split of every metric of every profile.
    """
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
