"""Fuzzed configs: a valid config mutated by hypothesis, written as TOML, and what the CLI must do.

Why mutations of one valid config rather than arbitrary TOML: arbitrary documents are refused at
the top level and never reach the deep rules (a duration's range, an open loop's planned
arrivals, the mock's memory); a valid config with one to three leaves changed reaches every
validator and every stage behind a passing validation, where crashes and hangs hide.

`check_outcome` is the contract each run is held to: no traceback, exit 0 or 2, an exit 2 names
the field, and nothing is written on exit 2.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from schemas import parse_duration

__all__ = [
    "BASE_CONFIG",
    "PINNED_TIMEOUT",
    "Raw",
    "check_outcome",
    "event_files",
    "fuzzed_configs",
    "pin_timeouts",
    "to_toml",
]

PINNED_TIMEOUT = 1.0
"""Seconds: a valid scenario timeout above this is lowered to it before `execute`, so a valid but
slow config (a 5-minute latency, a 600 s hang) ends on time instead of looking like a hang."""

# Every section and most fields, set to values that run fast against the in-process mock.
BASE_CONFIG: dict[str, Any] = {
    "default_scenarios": ["closed", "open"],
    "lock_timeout": "5s",
    "targets": [
        {
            "name": "fast",
            "provider": "mock",
            "model": "mock-small",
            "mock": {
                "simulated_latency": "1ms",
                "token_generation_rate": 2000.0,
                "error_injection_rate": 0.2,
                "memory_usage_simulation": 4096,
                "concurrency_limit": 10,
                "response_variability": 0.1,
                "output_tokens": 4,
                "seed": 1,
                "error_kinds": ["rate_limit", "cut", "hang"],
                "overload": "queue",
                "retry_after": "10ms",
                "hang": "50ms",
            },
            "max_retries": 1,
            "request_timeout": "1s",
            "headers": {"x-team": "bench"},
        }
    ],
    "scenarios": [
        {
            "name": "closed",
            "description": "a closed loop",
            "test_prompts": ["hi", "there"],
            "expected_operations": 3,
            "concurrency_level": 2,
            "timeout_duration": "1s",
            "streaming_required": True,
            "tools_required": False,
            "max_tokens": 4,
            "warmup": 1,
            "system_prompt": "be brief",
            "tags": ["t"],
        },
        {
            "name": "open",
            "test_prompts": ["hi"],
            "rate": 100.0,
            "arrival": "constant",
            "ramp_up": "10ms",
            "duration": "50ms",
            "concurrency_level": 4,
            "timeout_duration": "1s",
            "max_tokens": 4,
        },
    ],
    "prices": {"mock-small": {"input": 0.5, "output": 1.5, "cached_input": 0.25}},
    "trends": {
        "min_change": 0.05,
        "confidence_threshold": 0.99,
        "step_p": 0.001,
        "min_points": 3,
        "min_segment": 3,
    },
    "compare_weights": {"latency": 0.4, "cost": 0.3, "reliability": 0.3},
}


@dataclass(frozen=True)
class Raw:
    """A TOML token written as is: an integer too long for Python's int-to-str limit, or an
    array nested too deep for a recursive writer."""

    text: str


# --- A tiny TOML writer (inline tables and arrays: enough for any tree of these values) ------

_CONTROL = re.compile(r'[\x00-\x1f\x7f"\\]')


def _string(value: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return {'"': '\\"', "\\": "\\\\"}.get(char) or f"\\u{ord(char):04x}"

    return '"' + _CONTROL.sub(escape, value) + '"'


def _value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(document: dict[str, Any]) -> str:
    """The document as TOML: one `"key" = value` line per top-level key."""
    return "".join(f"{_string(str(k))} = {_value(v)}\n" for k, v in document.items())


# --- Mutations --------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _paths(tree: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every node below the root, down to 6 levels: dict entries and list items, containers too."""
    out: list[Path_] = []
    if len(prefix) >= 6:
        return out
    items: list[tuple[str | int, Any]] = []
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


def _parent(tree: Any, path: Path_) -> Any:
    for key in path[:-1]:
        tree = tree[key]
    return tree


_HUGE_INTS = st.sampled_from(
    [
        -1,
        0,
        10**6 + 1,
        10**7 + 1,
        10**9,
        2**31,
        2**53 + 1,
        2**63 - 1,
        2**63,
        2**64,
        10**30,
        -(2**63) - 1,
    ]
)
_SPECIAL_FLOATS = st.sampled_from(
    [math.inf, -math.inf, math.nan, 1e300, -1e300, 1e-300, 5e-324, 1e15, 1e9, -0.0, 0.0]
)
_DURATION_TEXT = st.sampled_from(
    [
        "1e400s",
        "1e300h",
        "99999999999h",
        "1e15",
        "inf",
        "nan",
        "-5s",
        "0s",
        "1e-400ms",
        "8d",
        "7d",
        "169h",
        "10081m",
        "604801s",
        "2s",
        "",
        " ",
        "µs",
        "3 ms",
    ]
)
_UNICODE = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=200
)
_LONG_TEXT = st.sampled_from(["x" * 10_000, "é" * 5_000, "🙂" * 2_000, "a\x00b", "../up", "a/b"])


def _nested(depth: int) -> Raw:
    """An array nested `depth` deep, as text: deeper than Python's recursion limit to build."""
    return Raw("[" * depth + "1" + "]" * depth)


_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    _HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    _SPECIAL_FLOATS,
    st.booleans(),
    _UNICODE,
    _LONG_TEXT,
    _DURATION_TEXT,
    st.dates(),
)
_CONTAINERS = st.one_of(
    st.recursive(
        _SCALARS,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(_UNICODE, children, max_size=4)
        ),
        max_leaves=8,
    ),
    st.integers(min_value=50, max_value=3000).map(_nested) | st.just(Raw("9" * 5000)),
    st.builds(dict),  # fresh each time: a later mutation may add to it
    st.builds(list),
)
_VALUES = st.one_of(_SCALARS, _CONTAINERS)


_DURATION_LIKE = re.compile(r"^[0-9.]+(us|ms|s|m|h)$")


def _numeric(value: Any) -> bool:
    """A number or a duration string: the leaves whose size decides what a run plans."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (
        isinstance(value, str) and bool(_DURATION_LIKE.match(value))
    )


def _numeric_variant(value: Any) -> st.SearchStrategy[Any]:
    """Relatives of a number: scaled up (into and far past its range), negated, just past zero;
    of a duration: odd and huge durations, as text or seconds."""
    if isinstance(value, str):
        return _DURATION_TEXT | _HUGE_INTS | _SPECIAL_FLOATS
    if isinstance(value, int):
        return st.sampled_from(
            [-value, value * 1000, value * 10**5, value * 10**6, value * 10**12, value + 2**63]
            + [-1, 0, value - 1, value + 1]
        )
    return st.sampled_from(
        [-value, value * 1000, value * 1e6, value * 1e300, value / 1e300]
        + [math.nextafter(0.0, 1.0), math.inf, math.nan]
    )


@st.composite
def _mutate(draw: st.DrawFn, document: dict[str, Any]) -> str:
    """Apply one mutation in place; returns what it did (for the failure report).

    Half the mutations change a number or a duration (where the deep rules are); the others
    replace any node by a value of another type or shape, delete one, add an unknown key, or
    repeat a list's first item (duplicate names).
    """
    paths = _paths(document)
    numeric = [p for p in paths if _numeric(_parent(document, p)[p[-1]])]
    op = draw(
        st.sampled_from(["numeric"] * 4 + ["replace"] * 2 + ["delete", "add_key", "duplicate"])
    )
    pool = numeric if op == "numeric" and numeric else paths
    path = draw(st.sampled_from(pool)) if pool else ()
    parent: Any = _parent(document, path) if path else document
    key: Any = path[-1] if path else None
    current = parent[key] if path else document
    if op == "numeric" and _numeric(current):
        parent[key] = draw(_numeric_variant(current))
    elif op == "delete" and path:
        del parent[key]
    elif op == "add_key":
        target = current if isinstance(current, dict) else document
        target[draw(_UNICODE)] = draw(_VALUES)
    elif op == "duplicate" and isinstance(current, list) and current:
        current.append(copy.deepcopy(current[0]))
    elif path:
        op = "replace"
        parent[key] = draw(_VALUES)
    else:
        op = "add_key"
        document[draw(_UNICODE)] = draw(_VALUES)
    return f"{op} {'.'.join(map(str, path))}"


@st.composite
def fuzzed_configs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """The base config with one to three mutations, and a description of each."""
    document = copy.deepcopy(BASE_CONFIG)
    done = [draw(_mutate(document)) for _ in range(draw(st.integers(1, 3)))]
    return document, done


def pin_timeouts(document: dict[str, Any]) -> dict[str, Any]:
    """A copy whose scenarios' valid timeouts above PINNED_TIMEOUT are lowered to it.

    Only values the models would accept are changed (a finite duration up to 7 days), so every
    invalid value still reaches `execute` as it was drawn.
    """
    pinned = copy.deepcopy(document)
    scenarios = pinned.get("scenarios")
    if not isinstance(scenarios, list):
        return pinned
    for scenario in scenarios:
        if not isinstance(scenario, dict) or "timeout_duration" not in scenario:
            continue
        try:
            seconds = parse_duration(scenario["timeout_duration"]).total_seconds()
        except Exception:  # noqa: BLE001 - any refusal leaves the value for the CLI to refuse
            continue
        if PINNED_TIMEOUT < seconds <= 7 * 86400:
            scenario["timeout_duration"] = PINNED_TIMEOUT
    return pinned


def event_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("*.arrow")) if data_dir.exists() else []


def check_outcome(
    code: int, err: str, sources: tuple[str, ...], data_dir: Path | None = None
) -> None:
    """The contract of a run on a fuzzed config (raises AssertionError with the reason)."""
    assert "Traceback" not in err, err[-3000:]
    assert code in (0, 2, 4), f"exit {code}: {err[-3000:]}"
    if code == 4:  # every attempt of a target failed (the fuzzed mock can inject it all)
        assert "error: every measured attempt against" in err, err[-3000:]
    if code == 2:
        named = "|".join(re.escape(s) for s in sources)
        # `file: path.to.field: message` (the field may be a list index or "(top level)").
        assert re.search(rf"(?:^|error: )(?:{named}): \S[^\n]*: \S", err, re.M), err[-3000:]
        if data_dir is not None:
            assert not event_files(data_dir), f"exit 2 but events were written in {data_dir}"
