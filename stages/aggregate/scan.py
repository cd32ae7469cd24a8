"""One pass over the request events: every per-result number the transform needs.

Why Arrow batches and numpy instead of polars `group_by`s: grouping 10M rows by three strings
hashes every row's strings once per grouping (results, error types, seconds started, seconds
ended), and the chunk-offset lists would have to be read a second time for ITL. But the events
arrive in batches that each come from one run's file, so a batch almost always holds a single
(run_id, scenario, target): checking that is a few vectorised comparisons, after which every
aggregate is a plain reduction of a numpy array (sums, extremes, `bincount`s by second), with no
hashing at all. Per result only small things are kept: latencies and TTFTs of successful requests
(16 bytes a request, for numpy's own percentiles), exact (value, count) tables of the ITL gaps,
integer sums and a per-second table.

Why per file, on threads, straight from Arrow: the event files are independent, so they are read
(`EventLog` hands out one batch source per file) and folded a few consecutive files per task, on
one thread per core, into partial results merged at the end. Arrow's decompression and numpy's big-array work release the
GIL, so both cores work; and reading the IPC batches with pyarrow, instead of converting them to
polars first, saves a copy of every string and list (measured in docs/aggregate.md).

Exactness: every sum is an exact integer (`_sum_squares` and `_bin_sums` prove their float or
int64 shortcut cannot round or overflow, else take an exact slow path), extremes and counts do not
depend on order, and percentiles are numpy's over all values, so the result depends neither on
how the rows are split into files, batches and threads nor on their order: a full and an
incremental build give the same numbers.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas import ERROR_TYPES
from stages.aggregate.distributions import GapCounts, IntArray, linear_quantile, quantiles
from stages.aggregate.slo import SLO_COUNTS, good_masks

__all__ = [
    "COLUMNS",
    "ERROR_COLUMNS",
    "KEYS",
    "LATENCY_Q",
    "SHORT_Q",
    "BatchSource",
    "Scanned",
    "ThresholdLookup",
    "Thresholds",
    "frame_source",
    "scan_requests",
]

KEYS = ("run_id", "scenario", "target")
ERROR_COLUMNS = tuple(f"error_{kind}" for kind in ERROR_TYPES) + ("error_other",)
LATENCY_Q = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}
SHORT_Q = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

COLUMNS = (
    *KEYS,
    "provider",
    "model",
    "warmup",
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
    "token_source",
    "reconnects",
)
"""The request-event columns the pass reads (a batch source must give at least these)."""

BatchSource = Callable[[], Iterable[pa.RecordBatch]]
"""A lazily read part of the request events (one event file, or a whole frame)."""
Thresholds = Mapping[str, int]
"""An SLO's thresholds in integer µs, by name (`Slo.thresholds_us`)."""
ThresholdLookup = Callable[[tuple[object, ...]], Thresholds | None]
"""A result's key -> the thresholds its attempts are judged by (None: no SLO)."""

_US = 1_000_000
# Per-second counters, in the order of `_Result.seconds` rows.
_SECOND_COUNTS = ("started", "completed", "errors", "output_tokens", "lat_sum", "lat_n")
_I, _F, _S = pl.Int64(), pl.Float64(), pl.String()
BoolArray = npt.NDArray[np.bool_]
_MIXED = "a (run_id, scenario, target) has events from more than one provider/model"
_JOIN_ROWS = 32_768
_TASKS_PER_THREAD = 8


@dataclass(frozen=True)
class Scanned:
    """`results`: one row per result with the exact sums, extremes, counts and percentiles (µs);
    `seconds`: one row per result and epoch second from its first to its last, with counts."""

    results: pl.DataFrame
    seconds: pl.DataFrame


def frame_source(frame: pl.LazyFrame) -> BatchSource:
    """A LazyFrame of request events as one batch source (polars streams and reads it)."""

    def batches() -> Iterator[pa.RecordBatch]:
        chunks = frame.select(COLUMNS).collect_batches(engine="streaming", maintain_order=False)
        for chunk in chunks:
            yield from chunk.to_arrow().to_batches()

    return batches


# -- exact integer reductions --------------------------------------------------------------------


def _sum_squares(x: IntArray, top: int | None = None) -> int:
    """Σx² exactly: int64 when no partial sum can overflow (always, for µs latencies in a
    batch), else Python integers. `top`: the largest |x|, when the caller knows it."""
    if len(x) == 0:
        return 0
    if top is None:
        top = int(np.abs(x).max())
    if top * top * len(x) < 2**63:
        return int(np.dot(x, x))
    return sum(int(v) * int(v) for v in x.tolist())


def _bin_sums(bins: IntArray, weights: IntArray, length: int, top: int | None = None) -> IntArray:
    """Σ weights per bin, exactly: `bincount`'s float64 sums are exact while every partial sum
    stays below 2⁵³ (checked), else an integer `add.at`. `top`: the largest |weight|, when the
    caller knows it."""
    if top is None and len(weights):
        top = max(int(weights.max()), -int(weights.min()))
    if top is not None and top * len(weights) >= 2**53:
        out = np.zeros(length, np.int64)
        np.add.at(out, bins, weights)
        return out
    return np.bincount(bins, weights=weights, minlength=length).astype(np.int64)


# -- reading Arrow columns as numpy --------------------------------------------------------------


def _ints(array: pa.Array) -> tuple[IntArray, BoolArray | None]:
    """An integer (or timestamp) column as int64, nulls as 0, and its validity (None: no nulls).
    Read from the Arrow buffers, without a copy when there are no nulls."""
    if array.type != pa.int64():
        array = array.cast(pa.int64())
    if array.null_count == 0:
        return array.to_numpy(), None
    validity, data = array.buffers()[:2]
    start, stop = array.offset, array.offset + len(array)
    assert validity is not None and data is not None  # there are nulls, so both exist
    valid = _bits(validity, start, len(array))
    return np.where(valid, np.frombuffer(data, np.int64)[start:stop], 0), valid


def _flags(array: pa.Array) -> BoolArray:
    """A boolean Arrow array as numpy, nulls as False. Unpacked from its bitmap with numpy
    (~10x faster than pyarrow's conversion, which goes through a generic writer)."""
    if array.null_count:
        array = pc.fill_null(array, False)
    if len(array) == 0:
        return np.zeros(0, np.bool_)
    return _bits(array.buffers()[1], array.offset, len(array))


def _bits(bitmap: pa.Buffer, offset: int, length: int) -> BoolArray:
    """`length` bits of an Arrow bitmap (validity or boolean values) from bit `offset`."""
    unpacked = np.unpackbits(
        np.frombuffer(bitmap, np.uint8), count=offset + length, bitorder="little"
    )
    return unpacked[offset:].view(np.bool_)


def _both(mask: BoolArray, valid: BoolArray | None) -> BoolArray:
    return mask if valid is None else mask & valid


def _same(array: pa.Array) -> tuple[bool, object]:
    """(every value equals the first, the first value)."""
    if array.type in (pa.string(), pa.large_string()) and array.null_count == 0:
        return _same_strings(array)
    value = array[0].as_py()
    if value is None:
        return array.null_count == len(array), None
    if array.null_count:
        return False, value
    return bool(pc.all(pc.equal(array, pa.scalar(value, array.type))).as_py()), value


def _same_strings(array: pa.Array) -> tuple[bool, str]:
    """`_same` for a non-empty string array without nulls, read off its buffers: every offset
    step is the first value's width, and the bytes repeat with that period (the data compared
    with itself shifted by one value: one memcmp, no copy). This runs five times a batch; it is
    ~8x cheaper than `pc.equal` + `pc.all` and holds the GIL only for the memcmp."""
    _, offsets_buffer, data = array.buffers()
    n = len(array)
    wide = array.type == pa.large_string()
    size = 8 if wide else 4
    offsets = np.frombuffer(
        offsets_buffer, np.int64 if wide else np.int32, count=n + 1, offset=size * array.offset
    )
    start = int(offsets[0])
    width = int(offsets[1]) - start
    value = data.slice(start, width).to_pybytes().decode()
    if int(offsets[-1]) - start != width * n or not (np.diff(offsets) == width).all():
        return False, value
    rest = width * (n - 1)
    return rest == 0 or data.slice(start + width, rest).equals(data.slice(start, rest)), value


# -- per-result accumulation ---------------------------------------------------------------------


@dataclass
class _Result:
    """Everything kept for one (run_id, scenario, target) while the batches stream by."""

    provider: object
    model: object
    slo: Thresholds | None = None
    """The SLO's thresholds (µs): its good attempts are counted in `sums` (`SLO_COUNTS`)."""
    sums: Counter[str] = field(default_factory=Counter)
    extremes: dict[str, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    latency: list[IntArray] = field(default_factory=list)
    ttft: list[IntArray] = field(default_factory=list)
    gaps: GapCounts = field(default_factory=GapCounts)
    seconds: list[tuple[int, IntArray]] = field(default_factory=list)
    """(first epoch second, counters × seconds) per batch, merged at the end."""

    def extreme(self, name: str, value: int, pick: Literal["min", "max"]) -> None:
        old = self.extremes.get(name)
        if old is None or (value < old if pick == "min" else value > old):
            self.extremes[name] = value

    def extreme_of(self, name: str, values: IntArray, pick: Literal["min", "max"]) -> None:
        if len(values):
            self.extreme(name, int(values.min() if pick == "min" else values.max()), pick)

    def expect(self, provider: object, model: object) -> None:
        """Refuse events of this key from another provider/model."""
        if (self.provider, self.model) != (provider, model):
            raise ValueError(_MIXED)

    def merge(self, other: _Result) -> None:
        """Fold another partial result of the same key in (from another file or thread)."""
        self.expect(other.provider, other.model)
        self.sums.update(other.sums)
        self.errors.update(other.errors)
        for name, value in other.extremes.items():
            self.extreme(name, value, "min" if name in ("first_start_us", "lat_min") else "max")
        self.latency.extend(other.latency)
        self.ttft.extend(other.ttft)
        self.gaps.merge(other.gaps)
        self.seconds.extend(other.seconds)

    def add(self, batch: pa.RecordBatch) -> None:
        """Fold one batch of this result's measured attempts in."""
        status = batch.column("status")
        ok = _flags(pc.equal(status, "ok"))
        failed = ~ok if status.null_count == 0 else ~ok & _flags(pc.is_valid(status))
        start, _ = _ints(batch.column("started_at"))  # required: no nulls
        lat, lat_valid = _ints(batch.column("latency_us"))
        ttft, ttft_valid = _ints(batch.column("ttft_us"))
        out, out_valid = _ints(batch.column("output_tokens"))
        attempt, attempt_valid = _ints(batch.column("attempt"))
        end = start + lat  # a missing latency ends the attempt where it started
        lat_ok = lat[_both(ok, lat_valid)]
        ttft_ok = ttft[_both(ok, ttft_valid)]
        has_tpot = _both(_both(_both(ok & (out > 1), out_valid), lat_valid), ttft_valid)
        # TPOT per request in ns, rounded half up with integers only (exact, so sums are exact).
        # Computed for every row (any divisor ≥ 1 where there is none) and summed where it
        # exists: cheaper than gathering three columns first.
        t_out = out - 1
        divisor = t_out * 2
        np.maximum(divisor, 1, out=divisor)
        tpot = ((lat - ttft) * 2000 + t_out) // divisor
        s = self.sums
        s["operations"] += batch.num_rows
        s["successful"] += int(np.count_nonzero(ok))
        s["retries"] += int(np.count_nonzero(_both(attempt > 1, attempt_valid)))
        lat_top = 0  # the largest |latency| of a successful attempt
        if len(lat_ok):
            low, high = int(lat_ok.min()), int(lat_ok.max())
            self.extreme("lat_min", low, "min")
            self.extreme("lat_max", high, "max")
            lat_top = max(-low, high)
        s["lat_n"] += len(lat_ok)
        s["lat_sum"] += int(lat_ok.sum())
        s["lat_sq"] += _sum_squares(lat_ok, lat_top)
        s["ttft_n"] += len(ttft_ok)
        s["ttft_sum"] += int(ttft_ok.sum())
        s["tpot_n"] += int(np.count_nonzero(has_tpot))
        s["tpot_sum"] += int(np.add.reduce(tpot, where=has_tpot))
        s["output_tokens"] += int(out.sum())  # nulls were read as 0
        for name in ("input_tokens", "cached_tokens", "reconnects"):
            s[name] += int(pc.sum(batch.column(name)).as_py() or 0)
        estimated = pc.equal(batch.column("token_source"), "estimated")
        s["tokens_estimated"] += int(pc.sum(estimated).as_py() or 0)
        self.extreme_of("first_start_us", start, "min")
        self.extreme_of("last_end_us", end, "max")
        self.latency.append(lat_ok)
        self.ttft.append(ttft_ok)
        self.gaps.add_lists(batch.column("chunk_offsets_us"), ok)
        if failed.any():
            rows = pa.array(np.flatnonzero(failed))  # few: gathering beats a 50k-row filter
            self.errors.update(
                _error_kinds(batch.column("error_type").take(rows), status.take(rows))
            )
        if self.slo:
            masks = good_masks(self.slo, ok, lat, lat_valid, ttft, ttft_valid, out, out_valid)
            for name, mask in masks.items():
                s[SLO_COUNTS[name]] += int(np.count_nonzero(mask))
        self._add_seconds(start // _US, end // _US, ok, failed, out, lat, lat_valid, lat_top)

    def _add_seconds(
        self,
        start_s: IntArray,
        end_s: IntArray,
        ok: BoolArray,
        failed: BoolArray,
        out: IntArray,
        lat: IntArray,
        lat_valid: BoolArray | None,
        lat_top: int,
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
                _bin_sums(last, np.where(lat_ok, lat, 0), length, lat_top),
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


def _error_kinds(error_type: pa.Array, status: pa.Array) -> Counter[str]:
    """Failed attempts per error column: `error_type`, else the status when it is `timeout` or
    `cancelled`; anything else (or nothing) is `error_other`. Counted by Arrow (few distinct
    values), the untyped rest by their status."""
    counts: Counter[str] = Counter()

    def count(kind: object, n: int) -> None:
        counts[f"error_{kind}" if kind in ERROR_TYPES else "error_other"] += n

    for row in pc.value_counts(error_type).to_pylist():
        if row["values"] is not None:
            count(row["values"], row["counts"])
    if error_type.null_count:
        for state, n in Counter(status.filter(pc.is_null(error_type)).to_pylist()).items():
            count(state if state in ("timeout", "cancelled") else None, n)
    return counts


def _by_key(batch: pa.RecordBatch) -> Iterator[tuple[tuple[object, ...], pa.RecordBatch]]:
    """The batch split by key. A batch usually comes from one run's file, so one key: checking
    that is a few vectorised comparisons; otherwise each row's key is encoded once."""
    if batch.num_rows == 0:
        return
    checks = [_same(batch.column(k)) for k in KEYS]
    if all(same for same, _ in checks):
        yield tuple(value for _, value in checks), batch
        return
    codes = [pc.dictionary_encode(batch.column(k), null_encoding="encode") for k in KEYS]
    rows = np.stack([c.indices.to_numpy(zero_copy_only=False) for c in codes], axis=1)
    groups, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for number, group in enumerate(groups):
        key = tuple(c.dictionary[int(i)].as_py() for c, i in zip(codes, group, strict=True))
        yield key, batch.take(pa.array(np.flatnonzero(inverse == number)))


def _measured(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch without its warmup attempts. They are few and come first in a run's file, so
    usually a zero-copy slice, not a filter that copies every column (lists included)."""
    warmup = batch.column("warmup")
    if warmup.null_count:
        return batch.filter(pc.invert(pc.fill_null(warmup, True)))
    flags = _flags(warmup)
    count = int(np.count_nonzero(flags))
    if count == 0 or flags[:count].all():
        return batch.slice(count)
    return batch.filter(pa.array(~flags))


def _constant(batch: pa.RecordBatch, name: str) -> object:
    """The one value of `name` in the batch (provider and model are constant per result)."""
    same, value = _same(batch.column(name))
    if not same:
        raise ValueError(_MIXED)
    return value


# -- the pass and its output frames --------------------------------------------------------------


def _fold(
    sources: Sequence[BatchSource], slo_of: ThresholdLookup | None = None
) -> dict[tuple[object, ...], _Result]:
    """Some sources' measured (non-warmup) attempts, reduced per result.

    Consecutive parts of one result are joined into batches of up to `_JOIN_ROWS` rows before
    they are reduced: `execute` flushes a file a second, often of a few hundred rows, and each
    reduction has a fixed cost of ~1 ms (a few dozen numpy and Arrow calls, an ITL histogram as
    wide as the longest gap); copying the small parts together costs far less."""
    found: dict[tuple[object, ...], _Result] = {}
    pending: list[pa.RecordBatch] = []
    pending_key: tuple[object, ...] = ()
    pending_rows = 0

    def flush() -> None:
        if not pending:
            return
        joined = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
        provider, model = _constant(joined, "provider"), _constant(joined, "model")
        acc = found.get(pending_key)
        if acc is None:
            slo = slo_of(pending_key) if slo_of is not None else None
            acc = found[pending_key] = _Result(provider, model, slo)
        acc.expect(provider, model)
        acc.add(joined)
        pending.clear()

    for source in sources:
        for batch in source():
            for key, part in _by_key(_measured(batch)):
                if key != pending_key or pending_rows >= _JOIN_ROWS:
                    flush()
                    pending_key, pending_rows = key, 0
                pending.append(part)
                pending_rows += part.num_rows
    flush()
    return found


def scan_requests(
    sources: Sequence[BatchSource],
    *,
    threads: int | None = None,
    slo_of: ThresholdLookup | None = None,
) -> Scanned:
    """Fold every source on `threads` threads (default: one per CPU) and merge; see the module
    docstring. The result does not depend on the split into sources or on the thread count.
    `slo_of`: each result's SLO thresholds, whose good attempts are counted (`SLO_COUNTS`).

    Consecutive sources go to one task (about 8 tasks per thread: enough to balance the threads,
    few enough that small files can be joined, see `_fold`)."""
    workers = max(1, threads or os.cpu_count() or 1)
    step = max(1, len(sources) // (workers * _TASKS_PER_THREAD))
    tasks = [sources[i : i + step] for i in range(0, len(sources), step)]
    found: dict[tuple[object, ...], _Result] = {}
    with ThreadPoolExecutor(workers) as pool:
        for partial in pool.map(_fold, tasks, [slo_of] * len(tasks)):
            for key, acc in partial.items():
                if key in found:
                    found[key].merge(acc)
                else:
                    found[key] = acc
        rows = list(pool.map(_result_row, found.keys(), found.values()))
    names = list(_RESULT_SCHEMA)
    if any(list(row) != names for row in rows):  # a column built twice, or one forgotten
        raise AssertionError("a result row does not have exactly the result columns")
    results = pl.DataFrame(
        {name: [row[name] for row in rows] for name in names}, schema=_RESULT_SCHEMA
    )
    return Scanned(results, _seconds_frame(found))


_RESULT_SCHEMA = pl.Schema(
    [
        *((k, _S) for k in KEYS),
        ("provider", _S),
        ("model", _S),
        ("operations", _I),
        ("successful", _I),
        ("retries", _I),
        ("reconnects", _I),
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
        ("tokens_estimated", _I),
        *((name, _I) for name in SLO_COUNTS.values()),
        *((name, _I) for name in ERROR_COLUMNS),
        *((f"lat_{q}", _F) for q in LATENCY_Q),
        *((f"ttft_{q}", _F) for q in SHORT_Q),
        *((f"itl_{q}", _F) for q in SHORT_Q),
        ("itl_mean", _F),
    ]
)


def _result_row(key: tuple[object, ...], acc: _Result) -> dict[str, object]:
    """One row of `_RESULT_SCHEMA`, by column name: the sums and extremes, and the percentiles
    (the costly part, so rows are built on the pass's threads: numpy's selection releases the
    GIL)."""
    s, x = acc.sums, acc.extremes
    row: dict[str, object] = dict(zip(KEYS, key, strict=True))
    row["provider"], row["model"] = acc.provider, acc.model
    for name in ("operations", "successful", "retries", "reconnects"):
        row[name] = s[name]
    for name in ("first_start_us", "last_end_us", "lat_min", "lat_max"):
        row[name] = x.get(name)
    for name in ("lat_n", "lat_sum", "lat_sq", "ttft_n", "ttft_sum", "tpot_n", "tpot_sum"):
        row[name] = s[name]
    for name in ("input_tokens", "output_tokens", "cached_tokens", "tokens_estimated"):
        row[name] = s[name]
    for part, name in SLO_COUNTS.items():  # null without an SLO, or a threshold it does not set
        wanted = acc.slo is not None and (part == "all" or part in acc.slo)
        row[name] = s[name] if wanted else None
    for name in ERROR_COLUMNS:
        row[name] = acc.errors[name]
    for q, value in zip(LATENCY_Q, quantiles(acc.latency, list(LATENCY_Q.values())), strict=True):
        row[f"lat_{q}"] = value
    for q, value in zip(SHORT_Q, quantiles(acc.ttft, list(SHORT_Q.values())), strict=True):
        row[f"ttft_{q}"] = value
    values, weights = acc.gaps.merged()
    for q, share in SHORT_Q.items():
        row[f"itl_{q}"] = linear_quantile(values, weights, share) if len(values) else None
    # exact sums: the mean of the pooled gaps from their value counts
    row["itl_mean"] = int(np.dot(values, weights)) / int(weights.sum()) if len(values) else None
    return row


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
