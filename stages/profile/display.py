"""How a trend and the numbers behind a decision are written for a person.

Two rules, because the outputs contradicted themselves without them:

- A trend is never shown without its change point. A profile can be `stable` (no drift) and
  still a regression (the level stepped up at one run); a table that said only "stable" next to
  an exit 3 for "latency stepped +39.3%" read as a false alarm.
- A number compared with a threshold is rounded toward the side where it fails, so that what is
  printed passes the threshold exactly when the number does: a confidence is rounded down (0.9876
  with a threshold of 0.99 prints 0.987, never 0.99), a p-value up (0.0504 with 0.05 prints
  0.051, never 0.05). Enough digits are kept to write the threshold itself.

Used by the `profile` and `run` tables and by recommend's evidence and Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

__all__ = ["confidence_shown", "confidence_text", "p_value_shown", "p_value_text", "trend_text"]

_CONFIDENCE_DECIMALS = 3
_P_DIGITS = 2


def _places(threshold: float | None) -> int:
    """Decimals that write `threshold` exactly (0.99 → 2, 0.995 → 3; 0 for none)."""
    if threshold is None:
        return 0
    exponent = Decimal(repr(float(threshold))).normalize().as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def _confidence(value: float, threshold: float | None) -> Decimal:
    places = max(_CONFIDENCE_DECIMALS, _places(threshold))
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), ROUND_FLOOR)


def confidence_shown(value: float, threshold: float | None = None) -> float:
    """`value` rounded down to 3 decimals, or to as many as `threshold` needs: never up across it.

    Rounding down keeps "shown ≥ threshold" equal to "value ≥ threshold" whenever the threshold
    is written with no more decimals than are shown, which the digits guarantee.
    """
    return float(_confidence(value, threshold))


def confidence_text(value: float, threshold: float | None = None) -> str:
    """:func:`confidence_shown` as text, with its trailing zeros ("0.990", "1.000")."""
    return str(_confidence(value, threshold))


def _p_digits(significance: float | None) -> int:
    if significance is None or significance <= 0:
        return _P_DIGITS
    return max(_P_DIGITS, len(Decimal(repr(float(significance))).normalize().as_tuple().digits))


def p_value_shown(value: float, significance: float | None = None) -> float:
    """`value` rounded up to 2 significant digits, or as many as `significance` needs: a p-value
    just above the significance level never prints as at or below it."""
    if value <= 0.0:
        return 0.0
    exact = Decimal(repr(float(value)))
    quantum = Decimal(1).scaleb(exact.adjusted() - _p_digits(significance) + 1)
    return float(exact.quantize(quantum, ROUND_CEILING))


def p_value_text(value: float, significance: float | None = None) -> str:
    """:func:`p_value_shown` as text ("0.051", "7.7e-08")."""
    return f"{p_value_shown(value, significance):.{_p_digits(significance)}g}"


def trend_text(row: Mapping[str, Any], metric: str, *, numbers: bool = False) -> str:
    """A metric's trend with its change point, from a profiles row: "stable, step +39.3% at r7",
    "degrading +12.0%", "insufficient_data". With `numbers`, each part carries what decided it:
    "stable (confidence 0.984), step +35.3% at r7 (p = 5.3e-10)" (3 decimals, rounded down:
    right for any `[trends] confidence_threshold` written with at most 3)."""
    direction = row.get(f"{metric}_trend") or "insufficient_data"
    text = str(direction)
    change = row.get(f"{metric}_relative_change")
    if direction in ("improving", "degrading") and change is not None:
        text += f" {change:+.1%}"
    confidence = row.get(f"{metric}_confidence")
    if numbers and direction != "insufficient_data" and confidence is not None:
        text += f" (confidence {confidence_text(confidence)})"
    step_run = row.get(f"{metric}_change_point_run_id")
    step = row.get(f"{metric}_change_point_relative_change")
    if step_run is not None and step is not None:
        text += f", step {step:+.1%} at {step_run}"
        p = row.get(f"{metric}_change_point_p")
        if numbers and p is not None:
            text += f" (p = {p_value_text(p)})"
    return text
