"""Field types shared by every model: durations, path-safe names, UTC instants.

Durations accept a number of seconds or a string with a unit ("50ms", "2s", "5m", "1h"), so a
config file can say what it means; they always become `datetime.timedelta`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

__all__ = [
    "NAME_PATTERN",
    "Duration",
    "NonNegativeDuration",
    "SafeName",
    "UtcDatetime",
    "check_safe_name",
    "require_unique_names",
    "parse_duration",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


def parse_duration(value: Any) -> timedelta:
    """Turn seconds (int/float), a unit string or a timedelta into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '50ms', '2s', '5m'")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            factor = _UNITS.get(unit or "s")
            if factor is not None:
                return timedelta(seconds=float(number) * factor)
    raise ValueError(
        f"invalid duration {value!r}: use seconds or a string like '50ms', '2s', '5m', '1h'"
    )


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _non_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be a negative duration")
    return value


def check_safe_name(value: str) -> str:
    """Names become file and directory names: refuse anything that could escape or hide."""
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
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
    timedelta, BeforeValidator(parse_duration), AfterValidator(_positive), _serialize_duration
]
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_non_negative), _serialize_duration
]
SafeName = Annotated[str, AfterValidator(check_safe_name)]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
