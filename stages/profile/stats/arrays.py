"""What the statistics share: one finite float array from the caller's values, and the base of a
relative change (so that a series starting at 0 still gets a meaningful denominator)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "as_finite_array", "relative_base"]

FloatArray = npt.NDArray[np.float64]


def as_finite_array(values: Sequence[float], name: str = "y") -> FloatArray:
    """``values`` as a 1-d float array, refusing NaN and infinities: the caller drops missing
    values first (keeping run positions), and one NaN would silently poison a median or a sum."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (drop missing values first)")
    return arr


def relative_base(preferred: float, values: FloatArray) -> float:
    """A positive denominator for a relative change, or 0.0 when every value is 0."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if abs(preferred) > 1e-9 * scale:
        return abs(preferred)
    return float(np.mean(np.abs(values))) if values.size else 0.0
