"""The pure aggregate transform: request, run and sample events in; results and time series out.

Why it is shaped this way:
- One streamed pass, bounded memory: `scan.py` reads every needed column of the request events
  once, in Arrow batches (per event file, on one thread per CPU), and reduces each batch in numpy
  (one result per batch, so no string hashing); only small per-result frames are ever
  materialised. The run and sample tables are tiny.
- Exact and order-independent. Percentiles are numpy's own (linear interpolation, see
  `distributions.py`). Means and the population standard deviation come from exact integer sums
  (µs, squares as Python integers/int128), so the value does not depend on how the rows are
  split into files, batches and threads: an incremental build gives the same bytes as a full one.
- Pooled ITL percentiles come from exact value counts of the integer-µs gaps, so hundreds of
  millions of gaps never have to sit in memory at once.
- No clock, no config, no I/O: prices come in as a lookup function and every output column has a
  fixed name and type (`RESULT_SCHEMA`, `TIMESERIES_SCHEMA`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from schemas import SLO_THRESHOLDS, ModelPrice
from stages.aggregate.scan import (
    ERROR_COLUMNS,
    KEYS,
    LATENCY_Q,
    SHORT_Q,
    BatchSource,
    ThresholdLookup,
    frame_source,
    scan_requests,
)
from stages.aggregate.slo import SLO_COUNTS, SloLookup, SloPolicy
from stages.aggregate.status import STATUS_INPUT, run_status

__all__ = [
    "ERROR_COLUMNS",
    "FINAL_RUN_STATUSES",
    "KEYS",
    "RESULT_SCHEMA",
    "SWEEP_TAGS",
    "TIMESERIES_KEYS",
    "TIMESERIES_SCHEMA",
    "Aggregates",
    "PriceLookup",
    "aggregate",
    "make_test_name",
]

TIMESERIES_KEYS = (*KEYS, "second")
FINAL_RUN_STATUSES = ("completed", "interrupted", "failed", "timed_out")
"""A run in one of these is rebuilt no more by `--incremental`; `running` and `partial` (some
shard has not finished: it may still) are."""
PriceLookup = Callable[[str], ModelPrice | None]

_US = 1_000_000
_F, _I, _S = pl.Float64(), pl.Int64(), pl.String()
_PER_THRESHOLD = [(part, name) for part, name in SLO_COUNTS.items() if part != "all"]
_TS = pl.Datetime("us", "UTC")

SWEEP_TAGS = {"sweep_id": _S, "sweep_step": _I, "sweep_axis": _S, "sweep_load": _F}
"""The `runs` fields that make a run a step of `pipeline sweep` (null on an ordinary run)."""

RESULT_SCHEMA = pl.Schema(
    [
        ("run_id", _S),
        ("test_name", _S),
        ("scenario", _S),
        ("target", _S),
        ("provider", _S),
        ("model", _S),
        ("run_status", _S),
        ("shards", _I),
        ("missing_shards", _S),
        ("mode", _S),
        ("concurrency", _I),
        ("planned_requests", _I),
        ("config_hash", _S),
        ("timestamp", _TS),
        ("duration_s", _F),
        ("operations", _I),
        ("successful", _I),
        ("failed", _I),
        ("retries", _I),
        ("reconnects", _I),
        ("error_rate", _F),
        *((name, _I) for name in ERROR_COLUMNS),
        ("throughput_rps", _F),
        ("output_tokens_per_s", _F),
        *((f"latency_{q}_ms", _F) for q in LATENCY_Q),
        ("latency_mean_ms", _F),
        ("latency_min_ms", _F),
        ("latency_max_ms", _F),
        ("latency_std_ms", _F),
        *((f"ttft_{q}_ms", _F) for q in SHORT_Q),
        ("ttft_mean_ms", _F),
        *((f"itl_{q}_ms", _F) for q in SHORT_Q),
        ("itl_mean_ms", _F),
        ("tpot_mean_ms", _F),
        ("input_tokens", _I),
        ("output_tokens", _I),
        ("total_tokens", _I),
        ("cached_tokens", _I),
        ("tokens_estimated", _I),
        ("efficiency_ratio", _F),
        ("cost_input_usd", _F),
        ("cost_output_usd", _F),
        ("cost_usd", _F),
        ("cost_per_request_usd", _F),
        ("price_input_per_mtok", _F),
        ("price_output_per_mtok", _F),
        ("price_cached_input_per_mtok", _F),
        ("price_as_of", pl.Date()),
        ("peak_memory_bytes", _I),
        ("mean_memory_bytes", _I),
        ("client_cpu_saturation", _F),
        ("client_saturated", pl.Boolean()),
        ("client_loop_lag_p95_ms", _F),
        ("slo", _S),
        ("slo_attainment_target", _F),
        *((f"slo_{name}_ms", _F) for name in SLO_THRESHOLDS),
        ("slo_good", _I),
        ("slo_attainment", _F),
        *((f"slo_{name}_attainment", _F) for name in SLO_THRESHOLDS),
        ("goodput_rps", _F),
        ("slo_met", pl.Boolean()),
        *SWEEP_TAGS.items(),
    ]
)
"""The columns of results/benchmark_results.parquet, in order (docs/aggregate.md defines each)."""

TIMESERIES_SCHEMA = pl.Schema(
    [
        ("run_id", _S),
        ("scenario", _S),
        ("target", _S),
        ("second", _I),
        ("at", _TS),
        ("started", _I),
        ("completed", _I),
        ("errors", _I),
        ("in_flight", _I),
        ("output_tokens", _I),
        ("latency_mean_ms", _F),
    ]
)
"""The columns of results/timeseries.parquet: one row per (run, scenario, target, second)."""


@dataclass(frozen=True)
class Aggregates:
    """What `aggregate` built; `unpriced_models` have null cost (the caller warns about them)."""

    results: pl.DataFrame
    timeseries: pl.DataFrame
    unpriced_models: tuple[str, ...]


def make_test_name(scenario: pl.Expr | str, target: pl.Expr | str) -> pl.Expr:
    """`<scenario>@<target>`: unique per result within a run, readable in any table."""
    return pl.concat_str(
        [
            pl.lit(scenario) if isinstance(scenario, str) else scenario,
            pl.lit("@"),
            pl.lit(target) if isinstance(target, str) else target,
        ]
    )


# -- exact statistics from the small per-result frames ---------------------------------------


def _divide(frame: pl.DataFrame, quotients: Sequence[tuple[str, str, str | float]]) -> pl.DataFrame:
    """Add `name = num / den` columns (in order, so one may use an earlier one); null when den is
    0 or null. Done in numpy on purpose: polars sometimes divides through the reciprocal (off by an
    ulp, depending on the frame's length or layout), which would make an incremental build differ
    from a full one in the last bit. numpy's division is always the correctly rounded one."""
    for name, num, den in quotients:
        top = frame.get_column(num).cast(_F).to_numpy()
        if isinstance(den, str):
            bottom = frame.get_column(den).cast(_F).to_numpy()
        else:
            bottom = np.full(frame.height, den, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(bottom > 0, top / bottom, np.nan)
        frame = frame.with_columns(pl.Series(name, value, dtype=_F).fill_nan(None))
    return frame


def _run_info(runs: pl.DataFrame) -> pl.DataFrame:
    """Per result: settings from the first `started` record, the status (across shards too)
    from `status.run_status`."""
    started = (
        runs.filter(pl.col("kind") == "started")
        .sort([*KEYS, "at", "event_id"])
        .group_by(KEYS, maintain_order=True)
        .first()
        .select(*KEYS, "mode", "concurrency", "planned_requests", "config_hash", *SWEEP_TAGS)
    )
    return (
        run_status(runs)
        .join(started, on=KEYS, how="left")
        .select(
            *KEYS,
            "mode",
            "concurrency",
            "planned_requests",
            "config_hash",
            *SWEEP_TAGS,
            "run_status",
            "shards",
            "missing_shards",
            "client_cpu_saturation",
            "client_saturated",
            "client_loop_lag_p95_ms",
        )
    )


def _sample_sums(samples: pl.LazyFrame) -> pl.LazyFrame:
    """Peak, sum and count of the client's RSS per (run_id, scenario, target) of the samples."""
    return samples.group_by("run_id", "scenario", "target").agg(
        pl.col("rss_bytes").max().alias("peak"),
        pl.col("rss_bytes").sum().alias("sum"),
        pl.len().cast(_I).alias("n"),
    )


def _memory(per_key: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """Peak and mean client RSS per result; a sample with no scenario/target covers the whole run."""
    matched = (
        keys.lazy()
        .join(per_key.lazy(), on="run_id", how="inner", suffix="_s")
        .filter(
            (pl.col("scenario_s").is_null() | (pl.col("scenario_s") == pl.col("scenario")))
            & (pl.col("target_s").is_null() | (pl.col("target_s") == pl.col("target")))
        )
    )
    return (
        matched.group_by(KEYS)
        .agg(
            pl.col("peak").max().cast(_I).alias("peak_memory_bytes"),
            (pl.col("sum").sum() // pl.col("n").sum()).cast(_I).alias("mean_memory_bytes"),
        )
        .collect()
    )


def _prices(models: Sequence[str], price_of: PriceLookup) -> tuple[pl.DataFrame, tuple[str, ...]]:
    rows, unknown = [], []
    for model in sorted(set(models)):
        price = price_of(model)
        if price is None:
            unknown.append(model)
            continue
        cached = price.cached_input if price.cached_input is not None else price.input
        rows.append((model, price.input, price.output, cached, price.as_of))
    frame = pl.DataFrame(
        rows,
        schema={
            "model": _S,
            "price_input_per_mtok": _F,
            "price_output_per_mtok": _F,
            "price_cached_input_per_mtok": _F,
            "price_as_of": pl.Date(),
        },
        orient="row",
    )
    return frame, tuple(unknown)


def _slo_frame(keys: pl.DataFrame, lookup: SloLookup | None) -> pl.DataFrame:
    """Per (run_id, scenario): the SLO applied, as a label, its target and thresholds in ms."""
    rows = []
    for run_id, scenario in keys.select("run_id", "scenario").unique().iter_rows():
        slo = lookup(run_id, scenario) if lookup is not None else None
        if slo is None:
            continue
        limits = slo.thresholds_us()
        thresholds = [limits[n] / 1000.0 if n in limits else None for n in SLO_THRESHOLDS]
        rows.append((run_id, scenario, slo.label(), slo.attainment, *thresholds))
    schema = {
        "run_id": _S,
        "scenario": _S,
        "slo": _S,
        "slo_attainment_target": _F,
        **{f"slo_{name}_ms": _F for name in SLO_THRESHOLDS},
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _finish_results(
    main: pl.DataFrame,
    runs: pl.DataFrame,
    memory: pl.DataFrame,
    prices: pl.DataFrame,
    slos: pl.DataFrame,
) -> pl.DataFrame:
    """Join the per-result pieces and derive every output column (exact, see `_divide`)."""
    col, big, ms = pl.col, pl.Int128(), 1000.0
    uncached = (col("input_tokens") - col("cached_tokens")).clip(lower_bound=0)
    # Population variance × n², exactly in integers: n·Σx² − (Σx)².
    var_num = col("lat_n").cast(big) * col("lat_sq") - col("lat_sum").cast(big) ** 2
    frame = (
        main.join(runs, on=KEYS, how="left")
        .join(memory, on=KEYS, how="left")
        .join(prices, on="model", how="left")
        .join(slos, on=["run_id", "scenario"], how="left")
        .with_columns(
            make_test_name(col("scenario"), col("target")).alias("test_name"),
            pl.from_epoch("first_start_us", time_unit="us")
            .dt.replace_time_zone("UTC")
            .alias("timestamp"),
            (col("last_end_us") - col("first_start_us")).alias("duration_us"),
            (col("operations") - col("successful")).alias("failed"),
            *(col(name).fill_null(0) for name in ERROR_COLUMNS),
            (col("input_tokens") + col("output_tokens")).alias("total_tokens"),
            (
                uncached * col("price_input_per_mtok")
                + col("cached_tokens") * col("price_cached_input_per_mtok")
            ).alias("cost_in_e6"),
            (col("output_tokens") * col("price_output_per_mtok")).alias("cost_out_e6"),
            var_num.cast(_F).alias("var_num"),
            (col("lat_n").cast(_F) ** 2).alias("var_den"),
        )
    )
    frame = _divide(
        frame,
        [
            ("duration_s", "duration_us", float(_US)),
            ("error_rate", "failed", "operations"),
            ("throughput_rps", "successful", "duration_s"),
            ("output_tokens_per_s", "output_tokens", "duration_s"),
            *((f"latency_{q}_ms", f"lat_{q}", ms) for q in LATENCY_Q),
            ("lat_mean", "lat_sum", "lat_n"),
            ("latency_mean_ms", "lat_mean", ms),
            ("latency_min_ms", "lat_min", ms),
            ("latency_max_ms", "lat_max", ms),
            ("lat_var", "var_num", "var_den"),
            *((f"ttft_{q}_ms", f"ttft_{q}", ms) for q in SHORT_Q),
            ("ttft_mean", "ttft_sum", "ttft_n"),
            ("ttft_mean_ms", "ttft_mean", ms),
            *((f"itl_{q}_ms", f"itl_{q}", ms) for q in SHORT_Q),
            ("itl_mean_ms", "itl_mean", ms),
            ("tpot_mean_ns", "tpot_sum", "tpot_n"),
            ("tpot_mean_ms", "tpot_mean_ns", 1e6),
            ("efficiency_ratio", "output_tokens", "input_tokens"),
            ("cost_input_usd", "cost_in_e6", 1e6),
            ("cost_output_usd", "cost_out_e6", 1e6),
            # Failed attempts count in the denominator (as misses); the same duration as
            # throughput_rps, so goodput_rps <= throughput_rps always.
            *((f"slo_{part}_attainment", name, "operations") for part, name in _PER_THRESHOLD),
            ("slo_attainment", "slo_good", "operations"),
            ("goodput_rps", "slo_good", "duration_s"),
        ],
    )
    frame = frame.with_columns(
        pl.when(col("lat_n") > 0).then(col("lat_var").fill_null(0.0).sqrt()).alias("lat_std"),
        (col("cost_input_usd") + col("cost_output_usd")).alias("cost_usd"),
        (col("slo_attainment") >= col("slo_attainment_target")).alias("slo_met"),
    )
    frame = _divide(
        frame,
        [("latency_std_ms", "lat_std", ms), ("cost_per_request_usd", "cost_usd", "successful")],
    )
    return _conform(frame, RESULT_SCHEMA)


def _finish_timeseries(seconds: pl.DataFrame) -> pl.DataFrame:
    """`scan.py` already gives every second from a result's first start to its last end."""
    frame = seconds.with_columns(
        pl.from_epoch("epoch_s", time_unit="s")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .alias("at"),
    )
    frame = _divide(
        frame, [("lat_mean", "lat_sum", "lat_n"), ("latency_mean_ms", "lat_mean", 1000.0)]
    )
    return _conform(frame, TIMESERIES_SCHEMA)


def _thresholds_of(lookup: SloLookup | None) -> ThresholdLookup | None:
    """The scan's view of the SLOs: a result key -> its thresholds in µs."""
    if lookup is None:
        return None

    def thresholds(key: tuple[object, ...]) -> dict[str, int] | None:
        found = lookup(str(key[0]), str(key[1]))
        return found.thresholds_us() if found is not None else None

    return thresholds


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Exactly the schema's columns, order and types, so every build writes the same file."""
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def aggregate(
    requests: pl.LazyFrame | Sequence[BatchSource],
    runs: pl.LazyFrame,
    samples: pl.LazyFrame,
    price_of: PriceLookup,
    slo: SloPolicy | None = None,
) -> Aggregates:
    """Replay events into one result row per (run_id, scenario, target) and its time series.

    `slo`: which SLO judges each result (`stages.aggregate.slo`); None: no SLO columns.

    `requests`, `runs` and `samples` are the event tables' frames (any subset of runs); the
    requests may instead come as Arrow batch sources, one per event file
    (`Replay.batch_sources`), which are read in parallel. The big scan over them runs once;
    everything after it works on per-group frames.
    """
    sources = [frame_source(requests)] if isinstance(requests, pl.LazyFrame) else requests
    run_query = runs.select(
        *STATUS_INPUT, "mode", "concurrency", "planned_requests", "config_hash", *SWEEP_TAGS
    )
    lookup = slo.lookup(runs) if slo is not None else None
    # The small run and sample tables are read by polars (without the GIL) while the scan runs.
    with ThreadPoolExecutor(1) as side:
        small = side.submit(pl.collect_all, [run_query, _sample_sums(samples)])
        scanned = scan_requests(sources, slo_of=_thresholds_of(lookup))
        run_df, sample_sums = small.result()
    main_df = scanned.results
    memory_df = _memory(sample_sums, main_df.select(KEYS))
    prices, unknown = _prices(main_df.get_column("model").to_list(), price_of)
    slos = _slo_frame(main_df, lookup)
    results = _finish_results(main_df, _run_info(run_df), memory_df, prices, slos)
    timeseries = _finish_timeseries(scanned.seconds)
    return Aggregates(
        results.sort(KEYS),
        timeseries.sort(TIMESERIES_KEYS),
        unknown,
    )
