"""Exact percentiles of the successful requests of a result: latency, TTFT and pooled ITL.

Why numpy: polars' grouped `quantile` selects once per quantile and column (eight selections per
result), and ITL pools every gap of every successful request (~13 per request in a typical stream,
so 130M gaps for 10M events): exploding those into a frame keyed by three strings costs far more
than the rest of the aggregate. So (see `scan.py`) latencies and TTFTs are kept per result as int64
arrays (16 bytes a request) and read with one `numpy.quantile(..., method="linear")` call each,
and the gaps, which are integer microseconds with a small range, are computed straight from the
list column's Arrow buffers (flat values and offsets, no explode), counted per batch with
`numpy.bincount` into one dense count array per result (rare long or negative gaps: sparse
(value, count) tables), from which the percentiles are read off the cumulative counts,
interpolated exactly as numpy does. Every number equals
`numpy.percentile` of the pooled values, and none depends on the order of batches.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

__all__ = ["DENSE", "GapCounts", "IntArray", "linear_quantile", "quantiles"]

_MERGE_EVERY = 16
DENSE = 1 << 18
"""Gaps below this many µs (262 ms) are counted densely: at most 2 MB per result."""
IntArray = npt.NDArray[np.int64]


def linear_quantile(values: IntArray, counts: IntArray, q: float) -> float:
    """The q-quantile of the multiset `values` (sorted, distinct) × `counts`, as numpy computes it."""
    cum = np.cumsum(counts)
    pos = q * float(cum[-1] - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    a = float(values[np.searchsorted(cum, lo, side="right")])
    b = float(values[np.searchsorted(cum, hi, side="right")])
    t = pos - lo
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _ranges(starts: IntArray, counts: IntArray) -> IntArray:
    """The indices start, start + 1, …, start + count − 1 of every (start, count), concatenated."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64)
    shift = np.repeat(starts - np.cumsum(counts) + counts, counts)
    return shift + np.arange(total, dtype=np.int64)


@dataclass
class GapCounts:
    """How often each gap value occurs, for one result.

    Gaps in 0 .. `DENSE` − 1 µs (nearly every ITL) are counted in one dense array, added to with
    a `bincount` per batch: no sorting, and merging partial counts is an array addition. Any other
    gap (longer, or negative from offsets that go back) is kept as sparse (value, count) tables,
    merged lazily to bound the work."""

    dense: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    parts: list[tuple[IntArray, IntArray]] = field(default_factory=list)

    def add_lists(
        self, lists: pa.ListArray | pa.LargeListArray, rows: npt.NDArray[np.bool_]
    ) -> None:
        """Add the gaps between successive offsets within every list of `lists` (a list column)
        whose `rows` entry is true.

        Read from the Arrow buffers and diffed in one go over the flat values: the step from one
        list into the next is no gap, so it is counted as a 0 and taken back from the 0 count,
        and so are the gaps of unselected rows (failed attempts, which rarely stream): cheaper
        than masking every gap."""
        if lists.null_count or lists.values.null_count:  # rare: a null list or offset adds none
            column = pl.Series(lists)
            rows = rows & column.is_not_null().to_numpy()
            lists = column.list.drop_nulls().to_arrow()
            if isinstance(lists, pa.ChunkedArray):
                lists = lists.combine_chunks()
        bounds = lists.offsets.to_numpy()
        first, stop = int(bounds[0]), int(bounds[-1])
        if stop - first < 2:
            return
        values = lists.values.slice(first, stop - first).to_numpy().astype(np.int64, copy=False)
        bounds = bounds - first
        gaps = _scratch(len(values) - 1)
        np.subtract(values[1:], values[:-1], out=gaps)
        cut = bounds[1:-1]
        cut = cut[(cut > 0) & (cut < len(values))] - 1  # sorted; repeated for empty lists
        gaps[cut] = 0
        crossings = len(cut) - int(np.count_nonzero(cut[1:] == cut[:-1]))
        lengths = np.diff(bounds)
        drop = np.flatnonzero(~rows & (lengths > 1))
        self._add_counted(gaps, crossings, gaps[_ranges(bounds[drop], lengths[drop] - 1)])

    def _add_counted(self, gaps: IntArray, zeros: int, minus: IntArray) -> None:
        """Add `gaps` less `zeros` of its zeros and less the values `minus` (taken from it)."""
        if len(gaps) == zeros + len(minus):
            return
        counts = None
        if int(gaps.max()) < DENSE:
            try:
                counts = np.bincount(gaps)
            except ValueError:  # a negative gap: split below
                pass
        rest = minus_rest = gaps[:0]
        if counts is None:
            small, small_minus = _in_dense(gaps), _in_dense(minus)
            counts = np.bincount(gaps[small])
            rest, minus_rest, minus = gaps[~small], minus[~small_minus], minus[small_minus]
        if zeros:  # a 0 is among the gaps, so `counts` has a 0 entry
            counts[0] -= zeros
        if len(minus):  # `minus` is taken from the gaps: its values are within `counts`
            counts -= np.bincount(minus, minlength=len(counts))
        self._add_dense(counts.astype(np.int64, copy=False))
        if len(rest) > len(minus_rest):
            self._add_sparse(rest, minus_rest)

    def _add_dense(self, counts: IntArray) -> None:
        """Add a dense count array (this object may keep and modify it)."""
        have = self.dense
        if len(counts) > len(have):
            counts[: len(have)] += have
            self.dense = counts
        else:
            have[: len(counts)] += counts

    def _add_sparse(self, gaps: IntArray, minus: IntArray) -> None:
        values, counts = np.unique(gaps, return_counts=True)
        if len(minus):
            gone, times = np.unique(minus, return_counts=True)
            counts[np.searchsorted(values, gone)] -= times
        keep = counts > 0
        self.parts.append((values[keep].astype(np.int64), counts[keep].astype(np.int64)))
        if len(self.parts) >= _MERGE_EVERY:
            self.parts = [_merge(self.parts)]

    def merge(self, other: GapCounts) -> None:
        """Add every gap counted by `other` (which is used up: its arrays may be kept)."""
        self._add_dense(other.dense)
        self.parts.extend(other.parts)
        if len(self.parts) >= _MERGE_EVERY:
            self.parts = [_merge(self.parts)]

    def merged(self) -> tuple[IntArray, IntArray]:
        """(sorted distinct values, their counts)."""
        present = np.flatnonzero(self.dense)
        dense = (present.astype(np.int64), self.dense[present])
        return _merge([dense, *self.parts]) if self.parts else dense


_SCRATCH = threading.local()


def _scratch(size: int) -> IntArray:
    """A reusable int64 buffer of `size` for this thread: the gaps of a batch (megabytes) are
    written into memory that is already mapped, instead of a fresh allocation each batch."""
    buffer: IntArray | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _SCRATCH.buffer = np.empty(max(size, 1 << 20), np.int64)
    return buffer[:size]


def _in_dense(gaps: IntArray) -> npt.NDArray[np.bool_]:
    return (gaps >= 0) & (gaps < DENSE)


def _merge(parts: list[tuple[IntArray, IntArray]]) -> tuple[IntArray, IntArray]:
    """Sparse (values, counts) tables summed into one, sorted by value."""
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return values[starts], np.add.reduceat(counts, starts)


def quantiles(parts: list[IntArray], qs: Sequence[float]) -> list[float | None]:
    """numpy's linear-interpolation quantiles of the concatenated `parts` (None when empty)."""
    values = np.concatenate(parts) if parts else np.empty(0, np.int64)
    if len(values) == 0:
        return [None] * len(qs)
    # `values` is this function's own copy (concatenate always copies), so numpy may select in it.
    picked = np.quantile(values, list(qs), method="linear", overwrite_input=True)
    return [float(v) for v in picked]
