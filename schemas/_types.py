"""Field types shared by every model: durations, path-safe names, UTC instants.

Durations accept a number of seconds or a string with a unit ("50ms", "2s", "5m", "1h"), so a
config file can say what it means; they always become `datetime.timedelta`. A configured
duration is finite and at most `MAX_DURATION` (7 days): no benchmark, timeout or injected hang
needs longer, and `timedelta` itself overflows near a billion days, so an unbounded one would
end as a traceback (or a run that never ends) instead of a message naming the field.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DURATION",
    "NAME_PATTERN",
    "Duration",
    "Elapsed",
    "NonNegativeDuration",
    "NonNegativeElapsed",
    "SafeName",
    "UtcDatetime",
    "check_safe_name",
    "field_error",
    "parse_duration",
    "require_unique_names",
    "shown",
]

MAX_DURATION = timedelta(days=7)
"""The longest duration a config may give (timeouts, a run's duration, the mock's delays)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of an int that is stored in an Arrow int64 column."""
_LONGEST_S = timedelta.max.total_seconds()

# \Z, not $: a $ would let a name end in a newline.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_UNITS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


def shown(value: object) -> str:
    """The value as a message quotes it: its repr, cut short (a 5,000-digit number is noise)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _seconds(seconds: float, value: object) -> timedelta:
    """A timedelta of `seconds`, refusing what it cannot hold (inf, nan, beyond ~1e9 days)."""
    if not math.isfinite(seconds) or abs(seconds) > _LONGEST_S:
        raise ValueError(f"invalid duration {shown(value)}: must be a finite number of seconds")
    return timedelta(seconds=seconds)


def parse_duration(value: Any) -> timedelta:
    """Turn seconds (int/float), a unit string or a timedelta into a timedelta.

    Raises ValueError (never OverflowError) for anything a timedelta cannot hold, so a caller
    that turns ValueError into a message never shows a traceback.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '50ms', '2s', '5m'")
    if isinstance(value, int | float):
        try:
            return _seconds(float(value), value)
        except OverflowError:  # an int beyond a float's range
            raise ValueError(f"invalid duration {shown(value)}: too large") from None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            factor = _UNITS.get(unit or "s")
            if factor is not None:
                return _seconds(float(number) * factor, value)
    raise ValueError(
        f"invalid duration {shown(value)}: use seconds or a string like '50ms', '2s', '5m', '1h'"
    )


def _at_most_max(value: timedelta) -> timedelta:
    if value > MAX_DURATION:
        raise ValueError(
            f"must be at most {MAX_DURATION.days} days "
            f"({MAX_DURATION.total_seconds():.0f} s), got {value.total_seconds():g} s"
        )
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _non_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be a negative duration")
    return value


def field_error(model: str, field: str, message: str, value: Any) -> ValidationError:
    """A validation error located at `field`, for a rule a model checks across fields.

    Raised from a model validator, it keeps the path of the model in the document
    (`scenarios[0].duration: ...`), where a plain ValueError would name only the model.
    """
    error = PydanticCustomError("value_error", message)  # no placeholders: shown as given
    return ValidationError.from_exception_data(
        model, [InitErrorDetails(type=error, loc=(field,), input=value)]
    )


def check_safe_name(value: str) -> str:
    """Names become file and directory names: refuse anything that could escape or hide."""
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"invalid name {shown(value)}: use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return value


def require_unique_names(names: list[str], what: str) -> None:
    """Refuse a list in which a name repeats, naming the repeats."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must be timezone-aware (UTC)")
    return value.astimezone(UTC)


_serialize_duration = PlainSerializer(
    lambda v: v.total_seconds(), return_type=float, when_used="json"
)

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    AfterValidator(_at_most_max),
    _serialize_duration,
]
"""A configured duration: positive, at most MAX_DURATION."""
NonNegativeDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_non_negative),
    AfterValidator(_at_most_max),
    _serialize_duration,
]
"""A configured duration that may be 0, at most MAX_DURATION."""
Elapsed = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_positive), _serialize_duration
]
"""A measured duration: positive, with no upper bound (a run may overrun its timeout a bit)."""
NonNegativeElapsed = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_non_negative), _serialize_duration
]
"""A measured duration that may be 0 (a spread), with no upper bound."""
SafeName = Annotated[str, AfterValidator(check_safe_name)]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
