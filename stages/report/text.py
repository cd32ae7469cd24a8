"""How the report writes numbers, durations and trends, for its tables and its charts alike (pure).

Why one module: a number that the table writes one way and a chart's legend another (a step of
"+39%" in one place, "+39.3%" in the other) reads as two findings. Both the page and the charts
take their words from here, and so does a change point: wherever a trend's direction is written,
the change point `pipeline profile` found is written beside it, so that a row can never say
"stable" while `pipeline profile --fail-on-regression` exits 3 for a step in the same series.

Numbers are written for people: significant digits with their unit, never e-notation. What
`pipeline profile` also prints (a confidence, never rounded up across its threshold; a trend
with its change point) is taken from `stages.profile.display`, so the page and the terminal say
it in the same words and digits.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stages.profile.display import confidence_text
from stages.profile.display import trend_text as profile_trend_text

__all__ = [
    "TrendText",
    "duration",
    "legend_line",
    "ms",
    "number",
    "percent",
    "signed_percent",
    "trend_words",
    "usd",
]

DASH = "–"
"""What a missing value is written as."""

_ARROW = {"improving": "▲", "degrading": "▼", "stable": "●"}


def number(value: float, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated, never e-notation (0.0000268, 2.68, 12,345: whole
    digits are never dropped)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{round(value, decimals):,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def usd(value: float, _pos: int | None = None) -> str:
    """Dollars to three significant digits, never in e-notation ($0.0000282, $0.00084, $12.50)."""
    if value == 0 or not math.isfinite(value):
        return "$0" if value == 0 else f"${value}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return "$" + number(value)


def ms(value: float | None) -> str:
    """A duration in milliseconds: whole ms from 100 on, one decimal below."""
    if value is None:
        return DASH
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def percent(share: float | None) -> str:
    """A share of 1 as a percentage with one decimal (0.0235 → 2.4%)."""
    return DASH if share is None else f"{share * 100:.1f}%"


def signed_percent(change: float | None) -> str:
    """A relative change with its sign, one decimal, as `pipeline profile` writes it (+39.3%)."""
    return DASH if change is None else f"{change * 100:+.1f}%"


def duration(seconds: float) -> str:
    """A length of time in its largest unit: 10 ms, 0.5 s, 15 s, 2 min, 6 h, 7 d."""
    if seconds < 0.1:
        return f"{number(seconds * 1000)} ms"
    for size, unit in ((86400.0, "d"), (3600.0, "h"), (60.0, "min")):
        if seconds >= size:
            return f"{number(seconds / size)} {unit}"
    return f"{number(seconds)} s"


@dataclass(frozen=True)
class TrendText:
    """What the page says of one metric's trend in one profile row.

    `direction` and `step_direction` are the profile's words (improving, degrading, stable,
    insufficient_data; the change point's improving or degrading, None without one).
    """

    direction: str
    label: str
    """"▼ degrading", "● stable", or "too few runs"."""
    change: str | None
    """"+34.7%, confidence 0.98"; None with too few runs."""
    step_direction: str | None
    step: str | None
    """"▼ step +39.3%" (the change point, judged as profile judged it); None without one."""
    step_run_id: str | None


def legend_line(row: Mapping[str, Any], metric: str, width: int = 56) -> str:
    """A chart legend's entry for a profile row's target: the direction with its change point
    beside it in the words of `pipeline profile`'s table ("mock-slow: stable, step +39.3% at
    r7"), broken before the step when longer than `width` (a long run id or name must not
    squeeze the chart to nothing)."""
    text = f"{row['target']}: {profile_trend_text(row, metric)}"
    if len(text) <= width:
        return text
    head, cut, step = text.partition(", step ")
    parts = [head, f"step {step}"] if cut else [head]
    return "\n".join(textwrap.fill(part, width, break_on_hyphens=False) for part in parts)


def trend_words(row: Mapping[str, Any], metric: str, threshold: float) -> TrendText:
    """The words for `metric`'s trend in a profile row (`threshold`: the confidence a direction
    needs, from the settings the profiles were built with)."""
    direction = row.get(f"{metric}_trend") or "insufficient_data"
    change = row.get(f"{metric}_relative_change")
    shown_change = None
    if direction != "insufficient_data" and change is not None:
        level = row.get(f"{metric}_confidence") or 0.0
        shown_change = f"{signed_percent(change)}, confidence {confidence_text(level, threshold)}"
    label = f"{_ARROW[direction]} {direction}" if direction in _ARROW else "too few runs"
    run_id = row.get(f"{metric}_change_point_run_id")
    step = step_direction = None
    if run_id:
        step_direction = row.get(f"{metric}_change_point_direction")
        size = row.get(f"{metric}_change_point_relative_change")
        step = " ".join(
            part
            for part in (
                _ARROW.get(step_direction or ""),
                "step",
                signed_percent(size) if size is not None else None,
            )
            if part
        )
    return TrendText(direction, label, shown_change, step_direction, step, run_id or None)
