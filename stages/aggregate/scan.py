"""One streamed pass over the request events: every per-result number the transform needs.

Why one pass in numpy instead of polars `group_by`s: grouping 10M rows by three strings hashes
every row's strings once per grouping (results, error types, seconds started, seconds ended), and
the chunk-offset lists would have to be read a second time for ITL. But the events arrive in
batches that each come from one run's file, so a batch almost always holds a single
(run_id, scenario, target): checking that is a few vectorised comparisons, after which every
aggregate is a plain reduction of a numpy array (sums, extremes, `bincount`s by second), with no
hashing at all. So the events are streamed once (`collect_batches`), every column read once, and
per result only small things are kept: latencies and TTFTs of successful requests (16 bytes a
request, for numpy's own percentiles), exact (value, count) tables of the ITL gaps, integer sums
and a per-second table.

Exactness: every sum is an exact integer (`_sum_squares` and `_bin_sums` prove their float or
int64 shortcut cannot round or overflow, else take an exact slow path), extremes and counts do not
depend on order, and percentiles are numpy's over all values, so the result depends neither on
how the engine splits the rows into batches nor on their order: a full and an incremental build
give the same numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas import ERROR_TYPES
from stages.aggregate.distributions import GapCounts, IntArray, linear_quantile, quantiles

__all__ = [
    "ERROR_COLUMNS",
    "KEYS",
    "LATENCY_Q",
    "SHORT_Q",
    "Scanned",
    "scan_requests",
]

KEYS = ("run_id", "scenario", "target")
ERROR_COLUMNS = tuple(f"error_{kind}" for kind in ERROR_TYPES) + ("error_other",)
LATENCY_Q = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}
SHORT_Q = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

_US = 1_000_000
_COLUMNS = (
    *KEYS,
    "provider",
    "model",
    "attempt",
    "status",
    "error_type",
    "started_at",
    "latency_us",
    "ttft_us",
    "chunk_offsets_us",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
)
# Per-second counters, in the order of `_Result.seconds` rows.
_SECOND_COUNTS = ("started", "completed", "errors", "output_tokens", "lat_sum", "lat_n")
_I, _F, _S = pl.Int64(), pl.Float64(), pl.String()
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Scanned:
    """`results`: one row per result with the exact sums, extremes, counts and percentiles (µs);
    `seconds`: one row per result and epoch second from its first to its last, with counts."""

    results: pl.DataFrame
    seconds: pl.DataFrame


# -- exact integer reductions --------------------------------------------------------------------


def _sum_squares(x: IntArray) -> int:
    """Σx² exactly: int64 when no partial sum can overflow (always, for µs latencies in a
    batch), else Python integers."""
    if len(x) == 0:
        return 0
    top = int(np.abs(x).max())
    if top * top * len(x) < 2**63:
        return int(np.dot(x, x))
    return sum(int(v) * int(v) for v in x.tolist())


def _bin_sums(bins: IntArray, weights: IntArray, length: int) -> IntArray:
    """Σ weights per bin, exactly: `bincount`'s float64 sums are exact while every partial sum
    stays below 2⁵³ (checked), else an integer `add.at`."""
    if len(weights) and max(int(weights.max()), -int(weights.min())) * len(weights) >= 2**53:
        out = np.zeros(length, np.int64)
        np.add.at(out, bins, weights)
        return out
    return np.bincount(bins, weights=weights, minlength=length).astype(np.int64)


def _ints(series: pl.Series) -> tuple[IntArray, BoolArray | None]:
    """An integer column as int64 (nulls as 0) and its validity (None: no nulls).

    Read from the Arrow buffers: polars' `fill_null`/`is_not_null` each build a query, which
    costs more than the work on a batch."""
    if series.null_count() == 0:
        return series.to_numpy().astype(np.int64, copy=False), None
    array = series.cast(pl.Int64).to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    validity, data = array.buffers()[:2]
    start, stop = array.offset, array.offset + len(array)
    assert validity is not None and data is not None  # there are nulls, so both exist
    bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
    valid = bits[start:stop].view(np.bool_)
    return np.where(valid, np.frombuffer(data, np.int64)[start:stop], 0), valid


def _epoch_us(series: pl.Series) -> IntArray:
    """A datetime column as µs since the epoch (no nulls: `started_at` is required)."""
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_unit == "us":
        return series.to_numpy().view(np.int64)
    return series.dt.epoch("us").to_numpy().astype(np.int64, copy=False)


def _both(mask: BoolArray, valid: BoolArray | None) -> BoolArray:
    return mask if valid is None else mask & valid


# -- per-result accumulation ---------------------------------------------------------------------


@dataclass
class _Result:
    """Everything kept for one (run_id, scenario, target) while the batches stream by."""

    provider: object
    model: object
    sums: Counter[str] = field(default_factory=Counter)
    extremes: dict[str, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    latency: list[IntArray] = field(default_factory=list)
    ttft: list[IntArray] = field(default_factory=list)
    gaps: GapCounts = field(default_factory=GapCounts)
    seconds: list[tuple[int, IntArray]] = field(default_factory=list)
    """(first epoch second, counters × seconds) per batch, merged at the end."""

    def extreme(self, name: str, values: IntArray, pick: Literal["min", "max"]) -> None:
        if len(values) == 0:
            return
        value = int(values.min() if pick == "min" else values.max())
        old = self.extremes.get(name)
        if old is None or (value < old if pick == "min" else value > old):
            self.extremes[name] = value

    def add(self, batch: pl.DataFrame) -> None:
        """Fold one batch of this result's measured attempts in."""
        status = batch.get_column("status")
        is_ok = status == "ok"
        if status.null_count():  # no status: neither successful nor failed (but an attempt)
            ok = is_ok.fill_null(False).to_numpy()
            failed = ~ok & status.is_not_null().to_numpy()
        else:
            ok = is_ok.to_numpy()
            failed = ~ok
        start = _epoch_us(batch.get_column("started_at"))
        lat, lat_valid = _ints(batch.get_column("latency_us"))
        ttft, ttft_valid = _ints(batch.get_column("ttft_us"))
        out, out_valid = _ints(batch.get_column("output_tokens"))
        attempt, attempt_valid = _ints(batch.get_column("attempt"))
        end = start + lat  # a missing latency ends the attempt where it started
        lat_ok = lat[_both(ok, lat_valid)]
        ttft_ok = ttft[_both(ok, ttft_valid)]
        has_tpot = _both(_both(_both(ok & (out > 1), out_valid), lat_valid), ttft_valid)
        # TPOT per request in ns, rounded half up with integers only (exact, so sums are exact).
        t_out = out[has_tpot] - 1
        tpot = ((lat[has_tpot] - ttft[has_tpot]) * 2000 + t_out) // (t_out * 2)
        s = self.sums
        s["operations"] += batch.height
        s["successful"] += int(ok.sum())
        s["retries"] += int(_both(attempt > 1, attempt_valid).sum())
        s["lat_n"] += len(lat_ok)
        s["lat_sum"] += int(lat_ok.sum())
        s["lat_sq"] += _sum_squares(lat_ok)
        s["ttft_n"] += len(ttft_ok)
        s["ttft_sum"] += int(ttft_ok.sum())
        s["tpot_n"] += len(tpot)
        s["tpot_sum"] += int(tpot.sum())
        for name in ("input_tokens", "output_tokens", "cached_tokens"):
            s[name] += int(batch.get_column(name).sum() or 0)
        self.extreme("first_start_us", start, "min")
        self.extreme("last_end_us", end, "max")
        self.extreme("lat_min", lat_ok, "min")
        self.extreme("lat_max", lat_ok, "max")
        self.latency.append(lat_ok)
        self.ttft.append(ttft_ok)
        self.gaps.add_lists(batch.get_column("chunk_offsets_us"), ok)
        if failed.any():
            rows = pl.Series(np.flatnonzero(failed))  # few: gathering beats a 50k-row filter
            self.errors.update(
                _error_kinds(
                    batch.get_column("error_type").gather(rows),
                    batch.get_column("status").gather(rows),
                )
            )
        self._add_seconds(start // _US, end // _US, ok, failed, out, lat, lat_valid)

    def _add_seconds(
        self,
        start_s: IntArray,
        end_s: IntArray,
        ok: BoolArray,
        failed: BoolArray,
        out: IntArray,
        lat: IntArray,
        lat_valid: BoolArray | None,
    ) -> None:
        if len(start_s) == 0:
            return
        base = int(min(start_s.min(), end_s.min()))
        length = int(max(start_s.max(), end_s.max())) - base + 1
        first, last = start_s - base, end_s - base
        if (ok ^ failed).all():  # every attempt has a status: one count by (second, outcome)
            outcome = np.bincount(last * 2 + failed, minlength=2 * length).reshape(length, 2).T
            completed, errors = outcome[0], outcome[1]
        else:
            completed = np.bincount(last[ok], minlength=length)
            errors = np.bincount(last[failed], minlength=length)
        lat_ok = _both(ok, lat_valid)
        table = np.stack(
            [
                np.bincount(first, minlength=length),
                completed,
                errors,
                _bin_sums(last, out, length),  # nulls were read as 0
                _bin_sums(last, np.where(lat_ok, lat, 0), length),
                completed if lat_valid is None else np.bincount(last[lat_ok], minlength=length),
            ]
        ).astype(np.int64)
        self.seconds.append((base, table))

    def second_table(self) -> tuple[int, IntArray]:
        """(first epoch second, counters × every second up to the last)."""
        base = min(b for b, _ in self.seconds)
        stop = max(b + t.shape[1] for b, t in self.seconds)
        table = np.zeros((len(_SECOND_COUNTS), stop - base), np.int64)
        for b, t in self.seconds:
            table[:, b - base : b - base + t.shape[1]] += t
        return base, table


def _error_kinds(error_type: pl.Series, status: pl.Series) -> Counter[str]:
    """Failed attempts per error column: `error_type`, else the status when it is `timeout` or
    `cancelled`; anything else (or nothing) is `error_other`. Counted by Arrow (few distinct
    values), the untyped rest by their status."""
    counts: Counter[str] = Counter()

    def count(kind: object, n: int) -> None:
        counts[f"error_{kind}" if kind in ERROR_TYPES else "error_other"] += n

    for row in pc.value_counts(error_type.to_arrow()).to_pylist():
        if row["values"] is not None:
            count(row["values"], row["counts"])
    if error_type.null_count():
        for state, n in Counter(status.filter(error_type.is_null()).to_list()).items():
            count(state if state in ("timeout", "cancelled") else None, n)
    return counts


def _by_key(
    batch: pl.DataFrame, keys: Sequence[str]
) -> Iterator[tuple[tuple[object, ...], pl.DataFrame]]:
    """The batch split by key. A batch usually comes from one run's file, so one key: checking
    that is a few vectorised comparisons, while `partition_by` hashes every row's strings."""
    if batch.height == 0:
        return
    first = tuple(batch.get_column(k)[0] for k in keys)
    if all((batch.get_column(k) == v).all() for k, v in zip(keys, first, strict=True)):
        yield first, batch
        return
    yield from batch.partition_by(list(keys), as_dict=True).items()


def _measured(batch: pl.DataFrame) -> pl.DataFrame:
    """The batch without its warmup attempts. They are few and come first in a run's file, so
    usually a zero-copy slice, not a filter that copies every column (lists included)."""
    warmup = batch.get_column("warmup")
    if warmup.null_count():
        return batch.filter(warmup.not_().fill_null(False))
    flags = warmup.to_numpy()
    count = int(flags.sum())
    if count == 0 or flags[:count].all():
        return batch.slice(count)
    return batch.filter(~warmup)


def _constant(batch: pl.DataFrame, name: str) -> object:
    """The one value of `name` in the batch (provider and model are constant per result)."""
    column = batch.get_column(name)
    value = column[0]
    if value is None:
        same = column.null_count() == batch.height
    else:
        same = column.null_count() == 0 and bool((column == value).all())
    if not same:
        raise ValueError(
            "a (run_id, scenario, target) has events from more than one provider/model"
        )
    return value


# -- the pass and its output frames --------------------------------------------------------------


def scan_requests(requests: pl.LazyFrame, *, engine: str = "streaming") -> Scanned:
    """Stream the measured (non-warmup) request attempts once; see the module docstring."""
    found: dict[tuple[object, ...], _Result] = {}
    columns = requests.select(*_COLUMNS, "warmup")
    for batch in columns.collect_batches(engine=engine, maintain_order=False):  # type: ignore[arg-type]
        for key, part in _by_key(_measured(batch), KEYS):
            provider, model = _constant(part, "provider"), _constant(part, "model")
            acc = found.setdefault(key, _Result(provider, model))
            if (acc.provider, acc.model) != (provider, model):
                raise ValueError(
                    "a (run_id, scenario, target) has events from more than one provider/model"
                )
            acc.add(part)
    return Scanned(_results_frame(found), _seconds_frame(found))


_RESULT_SCHEMA = pl.Schema(
    [
        *((k, _S) for k in KEYS),
        ("provider", _S),
        ("model", _S),
        ("operations", _I),
        ("successful", _I),
        ("retries", _I),
        ("first_start_us", _I),
        ("last_end_us", _I),
        ("lat_min", _I),
        ("lat_max", _I),
        ("lat_n", _I),
        ("lat_sum", _I),
        ("lat_sq", pl.Int128()),
        ("ttft_n", _I),
        ("ttft_sum", _I),
        ("tpot_n", _I),
        ("tpot_sum", _I),
        ("input_tokens", _I),
        ("output_tokens", _I),
        ("cached_tokens", _I),
        *((name, _I) for name in ERROR_COLUMNS),
        *((f"lat_{q}", _F) for q in LATENCY_Q),
        *((f"ttft_{q}", _F) for q in SHORT_Q),
        *((f"itl_{q}", _F) for q in SHORT_Q),
        ("itl_mean", _F),
    ]
)


def _results_frame(found: dict[tuple[object, ...], _Result]) -> pl.DataFrame:
    rows = []
    for key, acc in found.items():
        s, x = acc.sums, acc.extremes
        values, weights = acc.gaps.merged()
        if len(values):
            itl: list[float | None] = [
                linear_quantile(values, weights, q) for q in SHORT_Q.values()
            ]
            itl.append(int(np.dot(values, weights)) / int(weights.sum()))  # exact sums
        else:
            itl = [None] * (len(SHORT_Q) + 1)
        rows.append(
            (
                *key,
                acc.provider,
                acc.model,
                *(s[n] for n in ("operations", "successful", "retries")),
                x.get("first_start_us"),
                x.get("last_end_us"),
                x.get("lat_min"),
                x.get("lat_max"),
                *(s[n] for n in ("lat_n", "lat_sum", "lat_sq", "ttft_n", "ttft_sum")),
                *(s[n] for n in ("tpot_n", "tpot_sum")),
                *(s[n] for n in ("input_tokens", "output_tokens", "cached_tokens")),
                *(acc.errors[name] for name in ERROR_COLUMNS),
                *quantiles(acc.latency, list(LATENCY_Q.values())),
                *quantiles(acc.ttft, list(SHORT_Q.values())),
                *itl,
            )
        )
    return pl.DataFrame(rows, schema=_RESULT_SCHEMA, orient="row")


def _seconds_frame(found: dict[tuple[object, ...], _Result]) -> pl.DataFrame:
    """Per result and epoch second: the counters, `second` (from the result's first) and the
    attempts still in flight at the end of the second."""
    keys: list[list[object]] = [[] for _ in KEYS]
    parts: list[IntArray] = []
    for key, acc in found.items():
        base, table = acc.second_table()
        width = table.shape[1]
        for column, value in zip(keys, key, strict=True):
            column.extend([value] * width)
        started, completed, errors = table[0], table[1], table[2]
        in_flight = np.cumsum(started) - np.cumsum(completed + errors)
        second = np.arange(width, dtype=np.int64)
        parts.append(np.vstack([table, second + base, second, in_flight]))
    names = (*_SECOND_COUNTS, "epoch_s", "second", "in_flight")
    columns = np.hstack(parts) if parts else np.empty((len(names), 0), np.int64)
    return pl.DataFrame(
        {
            **{k: pl.Series(k, v, dtype=_S) for k, v in zip(KEYS, keys, strict=True)},
            **{n: pl.Series(n, columns[i], dtype=_I) for i, n in enumerate(names)},
        }
    )
