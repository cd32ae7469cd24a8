"""A service-level objective: the thresholds a request must meet to count as good.

An SLO is declared on a scenario (`slo = { ttft = "500ms", tpot = "50ms", latency = "10s" }`)
or given on the command line (`--slo "ttft=500ms,tpot=50ms"`, parsed by `parse_slo`). It is
judged per request attempt, at aggregate time, from the stored events: so changing it and
re-running `aggregate` re-derives attainment and goodput without sending a request.

Thresholds are kept as `timedelta`s (microsecond resolution, as the events' durations), so the
comparison with an event's integer-microsecond timings is exact at the boundary.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas._base import Frozen
from schemas._types import Duration, field_error, shown

__all__ = ["SLO_THRESHOLDS", "Slo", "format_threshold", "parse_slo"]

SLO_THRESHOLDS = ("ttft", "tpot", "latency")
"""The thresholds an SLO may set, in the order they are shown."""


class Slo(Frozen):
    """Thresholds (each optional, at least one) and the share of attempts that must meet them."""

    ttft: Duration | None = None
    """Time to first token, at most this (a non-streamed response: its latency, see README)."""
    tpot: Duration | None = None
    """Time per output token after the first, (latency − ttft) / (output_tokens − 1), at most this."""
    latency: Duration | None = None
    """End-to-end latency, at most this."""
    attainment: float = Field(default=0.95, gt=0.0, le=1.0, allow_inf_nan=False)
    """The fraction of measured attempts a run must get within every threshold to meet the SLO."""

    @model_validator(mode="after")
    def _some_threshold(self) -> Slo:
        if all(getattr(self, name) is None for name in SLO_THRESHOLDS):
            raise ValueError("an SLO needs at least one threshold: ttft, tpot or latency")
        return self

    def thresholds_us(self) -> dict[str, int]:
        """The thresholds that are set, in integer microseconds (exact against the events)."""
        out = {}
        for name in SLO_THRESHOLDS:
            value: timedelta | None = getattr(self, name)
            if value is not None:
                out[name] = value // timedelta(microseconds=1)
        return out

    def label(self) -> str:
        """What was applied, for a reader: `ttft≤500ms tpot≤50ms latency≤10s`."""
        return " ".join(f"{k}≤{format_threshold(v)}" for k, v in self.thresholds_us().items())


def format_threshold(us: int) -> str:
    """A threshold in the largest unit that shows it exactly: 10s, 500ms, 250us."""
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


def parse_slo(text: str) -> Slo:
    """`ttft=500ms,tpot=50ms,latency=10s,attainment=0.9` (any subset, any order) as an `Slo`.

    Raises pydantic's `ValidationError` located at the field at fault (an unknown key, a
    threshold that is not a positive duration, an attainment out of 0..1), or at `slo` for text
    that is not `key=value` pairs, so the caller can name it.
    """
    raw: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            message = (
                "expected key=value pairs separated by commas (ttft=500ms,tpot=50ms,"
                f"latency=10s,attainment=0.95), got {shown(part.strip())}"
            )
            error = PydanticCustomError("value_error", message)
            raise ValidationError.from_exception_data(
                "Slo", [InitErrorDetails(type=error, loc=(), input=text)]
            )
        if key in raw:
            raise field_error("Slo", key, "given twice", value)
        raw[key] = value
    return Slo.model_validate(raw)
