"""The pure aggregate transform against numpy, on random requests: exact metrics and invariants."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import ERROR_TYPES, ModelPrice
from stages.aggregate import RESULT_SCHEMA, TIMESERIES_SCHEMA, aggregate, to_benchmark_result
from stages.aggregate.distributions import GapCounts
from stages.aggregate.scan import _bin_sums, _flags, _same, _sum_squares
from stages.aggregate.transform import ERROR_COLUMNS
from tests.eventgen import EPOCH, RunSpec, conform_table, request_table, run_table, sample_table

PRICE = ModelPrice(input=3.0, output=15.0, cached_input=0.3, as_of=date(2026, 1, 1))
PRICES = {"priced": PRICE}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def to_frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def frames(requests: list[dict[str, Any]]) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    table = conform_table("requests", {k: [r[k] for r in requests] for k in requests[0]})
    runs = to_frame(run_table(RunSpec("r1", scenario="s", target="t", model="priced"), table))
    samples = to_frame(sample_table(RunSpec("r1", scenario="s", target="t"), 2.0))
    return to_frame(table).lazy(), runs.lazy(), samples.lazy()


request_st = st.fixed_dictionaries(
    {
        "latency": st.integers(0, 10**8),
        "ttft_share": st.floats(0, 1),
        "status": st.sampled_from(["ok", "ok", "ok", "error", "timeout", "cancelled"]),
        "error_type": st.sampled_from([*ERROR_TYPES, None, "weird"]),
        "warmup": st.booleans() | st.just(False),
        "start_ms": st.integers(0, 5000),
        "chunks": st.lists(st.integers(0, 50_000), max_size=6),
        "input": st.integers(0, 5000),
        "output": st.integers(0, 300),
        "cached_share": st.floats(0, 1),
        "attempt": st.integers(1, 3),
        "token_source": st.sampled_from(["server", "estimated", None]),
        "reconnects": st.integers(0, 1),
    }
)


def build(draws: list[dict[str, Any]], model: str = "priced") -> list[dict[str, Any]]:
    rows = []
    for i, d in enumerate(draws):
        ok = d["status"] == "ok"
        offsets = list(np.cumsum(d["chunks"])) if ok else []
        rows.append(
            {
                "event_id": f"e{i}",
                "run_id": "r1",
                "scenario": "s",
                "target": "t",
                "provider": "mock",
                "model": model,
                "request_index": i,
                "prompt_index": 0,
                "attempt": d["attempt"],
                "warmup": d["warmup"],
                "scheduled_at": EPOCH + timedelta(milliseconds=d["start_ms"]),
                "started_at": EPOCH + timedelta(milliseconds=d["start_ms"]),
                "ttft_us": int(d["latency"] * d["ttft_share"]) if ok else None,
                "latency_us": d["latency"],
                "chunk_offsets_us": [int(x) for x in offsets],
                "input_tokens": d["input"],
                "output_tokens": d["output"] if ok else None,
                "cached_tokens": int(d["input"] * d["cached_share"]),
                "status": d["status"],
                "error_type": None if ok else d["error_type"],
                "token_source": d["token_source"],
                "reconnects": d["reconnects"],
            }
        )
    return rows


def close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))


@FAST
@given(st.lists(request_st, min_size=1, max_size=60))
def test_metrics_equal_numpy(draws: list[dict[str, Any]]) -> None:
    rows = build(draws)
    measured = [r for r in rows if not r["warmup"]]
    result = aggregate(*frames(rows), PRICES.get).results
    if not measured:
        assert result.height == 0
        return
    row = result.row(0, named=True)
    ok = [r for r in measured if r["status"] == "ok"]
    assert row["operations"] == len(measured)
    assert row["successful"] == len(ok)
    assert row["failed"] == len(measured) - len(ok)
    assert row["error_rate"] == pytest.approx(1 - len(ok) / len(measured))
    assert sum(row[c] for c in ERROR_COLUMNS) == row["failed"]
    assert row["retries"] == sum(r["attempt"] > 1 for r in measured)
    assert row["reconnects"] == sum(r["reconnects"] for r in measured)
    assert row["tokens_estimated"] == sum(r["token_source"] == "estimated" for r in measured)
    if not ok:
        assert row["latency_p50_ms"] is None and row["latency_std_ms"] is None
        return
    lat = np.array([r["latency_us"] for r in ok], dtype=float) / 1000
    qs = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
    for name, q in qs.items():
        assert close(row[f"latency_{name}_ms"], float(np.percentile(lat, q, method="linear")))
    assert close(row["latency_mean_ms"], float(lat.mean()))
    assert close(row["latency_std_ms"], float(np.std(lat)))
    assert row["latency_min_ms"] == lat.min() and row["latency_max_ms"] == lat.max()
    ttft = np.array([r["ttft_us"] for r in ok], dtype=float) / 1000
    for name in ("p50", "p95", "p99"):
        assert close(row[f"ttft_{name}_ms"], float(np.percentile(ttft, qs[name])))
    gaps = [np.diff(r["chunk_offsets_us"]) for r in ok if len(r["chunk_offsets_us"]) > 1]
    if gaps:
        pooled = np.concatenate(gaps).astype(float) / 1000
        for name in ("p50", "p95", "p99"):
            assert close(row[f"itl_{name}_ms"], float(np.percentile(pooled, qs[name])))
        assert close(row["itl_mean_ms"], float(pooled.mean()))
    else:
        assert row["itl_p50_ms"] is None and row["itl_mean_ms"] is None
    tpot = [
        (r["latency_us"] - r["ttft_us"]) / (r["output_tokens"] - 1) / 1000
        for r in ok
        if r["output_tokens"] > 1
    ]
    if tpot:  # per request rounded to the nanosecond, then averaged
        assert row["tpot_mean_ms"] == pytest.approx(float(np.mean(tpot)), abs=1e-6)
    first = min(r["started_at"] for r in measured)
    last = max(r["started_at"] + timedelta(microseconds=r["latency_us"]) for r in measured)
    duration = (last - first).total_seconds()
    assert row["duration_s"] == pytest.approx(duration)
    if duration > 0:
        assert row["throughput_rps"] == pytest.approx(len(ok) / duration)


@FAST
@given(st.lists(request_st, min_size=1, max_size=40), st.sampled_from(["priced", "nobody-prices"]))
def test_invariants_and_cost(draws: list[dict[str, Any]], model: str) -> None:
    rows = build(draws, model)
    built = aggregate(*frames(rows), PRICES.get)
    assert built.results.schema == RESULT_SCHEMA
    assert built.timeseries.schema == TIMESERIES_SCHEMA
    for row in built.results.iter_rows(named=True):
        assert 0.0 <= row["error_rate"] <= 1.0
        if row["latency_p50_ms"] is not None:
            eps = 1e-9 * max(1.0, row["latency_max_ms"])
            chain = [
                row[f"latency_{q}_ms"] for q in ("min", "p50", "p90", "p95", "p99", "p999", "max")
            ]
            assert all(a <= b + eps for a, b in zip(chain, chain[1:], strict=False))
            assert row["latency_min_ms"] <= row["latency_mean_ms"] <= row["latency_max_ms"]
        measured = [r for r in rows if not r["warmup"]]
        tokens = {
            k: sum(r[f"{k}_tokens"] or 0 for r in measured) for k in ("input", "output", "cached")
        }
        assert row["total_tokens"] == tokens["input"] + tokens["output"]
        if model == "priced":
            cost_in = ((tokens["input"] - tokens["cached"]) * 3.0 + tokens["cached"] * 0.3) / 1e6
            assert row["cost_input_usd"] == pytest.approx(cost_in)
            assert row["cost_output_usd"] == pytest.approx(tokens["output"] * 15.0 / 1e6)
            assert row["cost_usd"] == pytest.approx(cost_in + tokens["output"] * 15.0 / 1e6)
            assert row["price_as_of"] == date(2026, 1, 1)
            assert built.unpriced_models == ()
        else:
            assert row["cost_usd"] is None and row["cost_per_request_usd"] is None
            assert built.unpriced_models == (model,)
        result = to_benchmark_result(row)
        assert result.test_name == "s@t"
        assert result.tokens_used.cost_usd == row["cost_usd"]
    series = built.timeseries
    if built.results.height:
        row = built.results.row(0, named=True)
        assert series["started"].sum() == row["operations"]
        assert series["completed"].sum() == row["successful"]
        assert series["errors"].sum() == row["failed"]
        lowest_in_flight = series["in_flight"].min()
        assert isinstance(lowest_in_flight, int)
        assert lowest_in_flight >= 0 and series["in_flight"][-1] == 0
        assert series["second"].to_list() == list(range(series.height))


def test_realistic_runs_validate_and_flag_status() -> None:
    specs = [
        RunSpec("a", requests=300, status="completed"),
        RunSpec("b", requests=300, status="interrupted", seed=2),
        RunSpec("c", requests=100, finished=False, seed=3),
    ]
    tables = [request_table(s) for s in specs]
    requests = pl.concat([to_frame(t) for t in tables]).lazy()
    runs = pl.concat([to_frame(run_table(s, t)) for s, t in zip(specs, tables, strict=True)])
    samples = pl.concat([to_frame(sample_table(s, 5.0)) for s in specs])
    prices = {"mock-small": PRICE}
    built = aggregate(requests, runs.lazy(), samples.lazy(), prices.get)
    status = dict(zip(built.results["run_id"], built.results["run_status"], strict=True))
    assert status == {"a": "completed", "b": "interrupted", "c": "running"}
    b = built.results.filter(pl.col("run_id") == "b").row(0, named=True)
    assert b["error_cancelled"] > 0
    assert b["peak_memory_bytes"] is not None and b["concurrency"] == 4
    for row in built.results.iter_rows(named=True):
        assert to_benchmark_result(row).latency_percentiles is not None


def test_empty_input_gives_empty_typed_outputs() -> None:
    empty = {
        name: to_frame(conform_table(name, {"event_id": []})).lazy()
        for name in ("requests", "runs", "samples")
    }
    built = aggregate(empty["requests"], empty["runs"], empty["samples"], PRICES.get)
    assert built.results.height == 0 and built.results.schema == RESULT_SCHEMA
    assert built.timeseries.height == 0 and built.timeseries.schema == TIMESERIES_SCHEMA


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 5))
def test_aggregating_runs_apart_equals_together(seed: int, count: int) -> None:
    """The basis of incremental mode: a run's rows do not depend on which other runs are replayed."""
    specs = [
        RunSpec(f"x{i}", requests=30 + 7 * i, seed=seed + i, model=("mock-small", "gpt-4o")[i % 2])
        for i in range(count)
    ]
    tables = [request_table(s) for s in specs]
    frames = [
        (to_frame(t), to_frame(run_table(s, t)), to_frame(sample_table(s, 3.0)))
        for s, t in zip(specs, tables, strict=True)
    ]
    prices = {"mock-small": PRICE, "gpt-4o": ModelPrice(input=2.5, output=10.0, cached_input=1.25)}

    def run(
        parts: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]],
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        requests, runs, samples = (pl.concat([p[i] for p in parts]).lazy() for i in range(3))
        built = aggregate(requests, runs, samples, prices.get)
        return built.results, built.timeseries

    together = run(frames)
    apart = [run([f]) for f in frames]
    assert together[0].equals(pl.concat([a[0] for a in apart]))
    assert together[1].equals(pl.concat([a[1] for a in apart]))


def test_a_saturated_client_is_flagged_in_the_results() -> None:
    spec = RunSpec("busy", requests=50)
    table = request_table(spec)
    runs = to_frame(run_table(spec, table)).with_columns(
        pl.when(pl.col("kind") == "finished").then(pl.lit(0.6)).alias("client_cpu_saturation"),
        pl.when(pl.col("kind") == "finished").then(pl.lit(True)).alias("client_saturated"),
    )
    samples = to_frame(sample_table(spec, 2.0))
    no_prices: dict[str, ModelPrice] = {}
    built = aggregate(to_frame(table).lazy(), runs.lazy(), samples.lazy(), no_prices.get)
    row = built.results.row(0, named=True)
    assert (row["client_saturated"], row["client_cpu_saturation"]) == (True, 0.6)
    calm = to_frame(run_table(spec, table))  # an older run without the columns: null, not False
    built = aggregate(to_frame(table).lazy(), calm.lazy(), samples.lazy(), no_prices.get)
    assert built.results["client_saturated"].to_list() == [None]


# -- the streamed pass's building blocks (stages/aggregate/scan.py, distributions.py) -----------


@FAST
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(-5, 40) | st.integers(0, 10**9), max_size=6),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 5),
)
def test_gap_counts_read_off_arrow_equal_numpy_diffs(
    lists: list[tuple[list[int], bool]], skip: int
) -> None:
    """Gaps come from the list column's flat buffers (sliced, crossing lists, unselected rows):
    the counted multiset must be exactly the pooled `numpy.diff` of the selected lists."""
    offsets = pl.Series([list(np.cumsum(steps)) for steps, _ in lists], dtype=pl.List(pl.Int64))
    rows = np.array([chosen for _, chosen in lists])
    skip = min(skip, len(lists) - 1)
    whole = GapCounts()
    whole.add_lists(offsets.slice(skip).to_arrow(), rows[skip:])
    half = (skip + len(lists)) // 2  # counted in two parts and merged, as two files or threads do
    parts, other = GapCounts(), GapCounts()
    parts.add_lists(offsets.slice(skip, half - skip).to_arrow(), rows[skip:half])
    other.add_lists(offsets.slice(half).to_arrow(), rows[half:])
    parts.merge(other)
    expected = [
        int(g)
        for (steps, chosen) in lists[skip:]
        if chosen
        for g in np.diff(np.cumsum(steps).astype(np.int64))
    ]
    for counts in (whole, parts):
        values, weights = counts.merged()
        assert np.repeat(values, weights).tolist() == sorted(expected)


def test_exact_sums_take_the_slow_path_when_a_shortcut_could_round() -> None:
    big = np.array([3_000_000_000, 3_000_000_001, 7], dtype=np.int64)
    assert _sum_squares(big) == sum(int(v) ** 2 for v in big)
    assert _sum_squares(np.array([2**40 + 1] * 5000, dtype=np.int64)) == 5000 * (2**40 + 1) ** 2
    weights = np.array([2**53 + 1, 2**53 + 3, 5], dtype=np.int64)
    bins = np.array([0, 0, 1])
    assert _bin_sums(bins, weights, 3).tolist() == [2**54 + 4, 5, 0]


def test_rows_in_any_order_and_batching_give_the_same_results() -> None:
    """Batches holding several results (compacted files, in-memory frames) take the split path."""
    specs = [RunSpec(f"o{i}", requests=60, seed=i, error_rate=0.3) for i in range(3)]
    tables = [request_table(s) for s in specs]
    requests = pl.concat([to_frame(t) for t in tables])
    runs = pl.concat([to_frame(run_table(s, t)) for s, t in zip(specs, tables, strict=True)])
    samples = pl.concat([to_frame(sample_table(s, 3.0)) for s in specs])
    ordered = aggregate(requests.lazy(), runs.lazy(), samples.lazy(), PRICES.get)
    shuffled = aggregate(
        requests.sample(fraction=1.0, shuffle=True, seed=7).lazy(),
        runs.lazy(),
        samples.lazy(),
        PRICES.get,
    )
    assert ordered.results.equals(shuffled.results)
    assert ordered.timeseries.equals(shuffled.timeseries)


@FAST
@given(
    st.lists(
        st.sampled_from(["", "a", "aa", "aaa", "ab", "é", "run-1", None]), min_size=1, max_size=12
    ),
    st.integers(0, 4),
    st.booleans(),
)
@example(["aa", "a", "aaa"], 0, False)  # same bytes and total length, uneven widths
@example(["x", "aa", "a", "aaa"], 1, True)
@example(["ab", "ab", "ba"], 0, False)  # even widths, bytes not one value repeated
def test_constant_check_reads_string_buffers_exactly(
    values: list[str | None], skip: int, large: bool
) -> None:
    """The per-batch key check (one value throughout?) reads the string buffers directly; it must
    agree with comparing the Python values, for sliced arrays and both offset widths."""
    skip = min(skip, len(values) - 1)
    array = pa.array(values, pa.large_string() if large else pa.string()).slice(skip)
    same, first = _same(array)
    assert first == values[skip]
    assert same == (len(set(values[skip:])) == 1)


@FAST
@given(st.lists(st.one_of(st.none(), st.booleans()), max_size=40), st.integers(0, 20))
def test_flags_unpack_the_bitmap_exactly(values: list[bool | None], skip: int) -> None:
    """Boolean columns (status checks, warmup) are unpacked from their bitmaps: for sliced arrays
    that start mid-byte too, every value must match, nulls read as False."""
    array = pa.array(values, pa.bool_()).slice(min(skip, len(values)))
    assert _flags(array).tolist() == [bool(v) for v in values[min(skip, len(values)) :]]
