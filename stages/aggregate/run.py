"""The thin wrapper around the transform: replay the event log, aggregate, write both outputs.

Why incremental mode is safe: a run's events stop changing once its `finished` record is written,
and every value in a result row depends only on that run's events and its model's price. So the
rows of finished runs whose price has not changed are copied from the previous output, the other
runs are replayed, and the union written with the same writer gives the same bytes as a full
rebuild. Runs still in progress (no `finished` record) are always re-aggregated.

The whole build runs inside the store's `write_outputs`: locally under the data directory's
lock; on an object store again from the start whenever another aggregate made its outputs
current meanwhile (the compare-and-swap of `pipeline.store.objstore`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from pipeline.errors import (
    CorruptEventFileError,
    InputError,
    StageInputMissingError,
    VanishedFileError,
)
from pipeline.store.backend import Writer
from pipeline.store.eventlog import EventFile, EventLog, Replay, read_file_table
from pipeline.store.layout import RESULTS, SWEEPS, TIMESERIES
from pipeline.store.location import Location, open_store
from pipeline.store.lock import DEFAULT_LOCK, LockOptions
from pipeline.store.outputs import find_output, parquet_writer, read_output
from schemas import TABLES
from stages.aggregate.scan import COLUMNS
from stages.aggregate.slo import SloLookup, SloPolicy
from stages.aggregate.sweeps import SWEEP_KEYS, sweeps
from stages.aggregate.transform import (
    FINAL_RUN_STATUSES,
    KEYS,
    RESULT_SCHEMA,
    TIMESERIES_KEYS,
    TIMESERIES_SCHEMA,
    Aggregates,
    PriceLookup,
    aggregate,
)

__all__ = ["AggregateReport", "read_results", "run_aggregate"]
_VANISHED_RETRIES = 3
"""How often a build starts over when a file it listed is gone (a concurrent compact on an
object store, where no lock keeps it away: its events are in the merged file)."""
_PRICE_COLUMNS = (
    "price_input_per_mtok",
    "price_output_per_mtok",
    "price_cached_input_per_mtok",
    "price_as_of",
)


@dataclass(frozen=True)
class AggregateReport:
    """What one `run_aggregate` did: the rows it (re)built, and what the caller should mention."""

    mode: str
    """"full" or "incremental"."""
    rebuilt: pl.DataFrame
    """The result rows computed by this call (in incremental mode, only the new or changed runs)."""
    total_rows: int
    timeseries_rows: int
    results_path: str
    timeseries_path: str
    """Where the outputs went: paths, or object-store URLs."""
    sweeps: pl.DataFrame
    """Every sweep's answer (`stages.aggregate.sweeps`), as written to `sweeps_path`."""
    sweeps_path: str
    unpriced_models: tuple[str, ...]
    quarantined: tuple[str, ...]


@dataclass(frozen=True)
class _Built:
    results: pl.DataFrame
    series: pl.DataFrame
    answers: pl.DataFrame
    rebuilt: Aggregates
    incremental: bool
    quarantined: tuple[str, ...]


def read_results(data_dir: Location) -> pl.DataFrame:
    """results/benchmark_results.parquet for a later stage, refused (with what to run) when it
    was written by an older version of this stage: a column it lacks (the SLO's, a sweep's)
    would otherwise stop that stage with a traceback."""
    store = open_store(data_dir)
    results = read_output(store, RESULTS, "aggregate")
    missing = [name for name in RESULT_SCHEMA if name not in results.columns]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise StageInputMissingError(
            f"{store.where(RESULTS)} was written by an older version of aggregate (it has no "
            f"{shown}): run `pipeline aggregate` to rebuild it from the events"
        )
    return results


def _event_run_ids(log: EventLog) -> set[str]:
    """Every run id in the requests table: from file names, and from compacted files' contents."""
    ids: set[str] = set()
    compacted = []
    for item in log.files("requests"):
        if item.run_id is None:
            compacted.append(item)
        else:
            ids.add(item.run_id)
    good, _ = log.check(compacted)  # a corrupt one fails later, in the replay, naming it
    for item, schema in good:  # only their run_id column is read (locally)
        found = log.store.scan_ipc([item.key], schema).select(pl.col("run_id").unique())
        ids |= set(found.collect().get_column("run_id").to_list())
    return ids


def _reusable_runs(existing: pl.DataFrame, runs: pl.DataFrame, price_of: PriceLookup) -> set[str]:
    """Runs whose previous rows are final: finished, every (scenario, target) present, same price."""
    stale_models = set()
    for row in existing.select("model", *_PRICE_COLUMNS).unique().iter_rows(named=True):
        price = price_of(row["model"])
        now = (
            (None, None, None, None)
            if price is None
            else (
                price.input,
                price.output,
                price.cached_input if price.cached_input is not None else price.input,
                price.as_of,
            )
        )
        if now != tuple(row[c] for c in _PRICE_COLUMNS):
            stale_models.add(row["model"])
    bad = existing.filter(
        ~pl.col("run_status").is_in(list(FINAL_RUN_STATUSES)).fill_null(True)
        | pl.col("model").is_in(list(stale_models))
    )
    missing = runs.select(KEYS).unique().join(existing.select(KEYS), on=KEYS, how="anti")
    blocked = set(bad.get_column("run_id").to_list()) | set(missing.get_column("run_id").to_list())
    return set(existing.get_column("run_id").to_list()) - blocked


def _stale_slo_runs(existing: pl.DataFrame, lookup: SloLookup) -> set[str]:
    """Runs whose rows were judged by another SLO than the one that applies now (edited in the
    config, or given with --slo): rebuilt, as a full build would judge them."""
    stale = set()
    pairs = existing.select("run_id", "scenario", "slo", "slo_attainment_target").unique()
    for run_id, scenario, label, target in pairs.iter_rows():
        slo = lookup(run_id, scenario)
        now = (None, None) if slo is None else (slo.label(), slo.attainment)
        if now != (label, target):
            stale.add(run_id)
    return stale


def run_aggregate(
    data_dir: Location,
    price_of: PriceLookup,
    *,
    incremental: bool = False,
    skip_corrupt: bool = False,
    lock: LockOptions = DEFAULT_LOCK,
    slo: SloPolicy | None = None,
) -> AggregateReport:
    """Rebuild results/ from the event log (all runs, or only those not yet final).

    `slo`: which SLO judges each result (`stages.aggregate.slo`); None: none does."""
    policy = slo if slo is not None else SloPolicy()
    log = EventLog(data_dir)
    store = log.store

    def build() -> tuple[_Built, list[tuple[str, Writer]]]:
        done = _build_retrying(
            log, price_of, policy, incremental=incremental, skip_corrupt=skip_corrupt
        )
        # All made current together: never one without the others.
        return done, [
            (RESULTS, parquet_writer(done.results, KEYS)),
            (TIMESERIES, parquet_writer(done.series, TIMESERIES_KEYS)),
            (SWEEPS, parquet_writer(done.answers, SWEEP_KEYS)),
        ]

    done = store.write_outputs("results", build, lock)
    unpriced = done.results.filter(pl.col("price_input_per_mtok").is_null()).get_column("model")
    return AggregateReport(
        mode="incremental" if done.incremental else "full",
        rebuilt=done.rebuilt.results,
        total_rows=done.results.height,
        timeseries_rows=done.series.height,
        results_path=store.where(RESULTS),
        timeseries_path=store.where(TIMESERIES),
        sweeps=done.answers,
        sweeps_path=store.where(SWEEPS),
        unpriced_models=tuple(sorted(set(unpriced.to_list()) | set(done.rebuilt.unpriced_models))),
        quarantined=done.quarantined,
    )


def _build_retrying(
    log: EventLog, price_of: PriceLookup, slo: SloPolicy, *, incremental: bool, skip_corrupt: bool
) -> _Built:
    """`_build`, started over when a file turns out corrupt past its footer (with
    --skip-corrupt it is moved aside too) or gone since it was listed."""
    if not log.files("requests") and not log.files("runs"):
        raise InputError(
            f"no events under {log.events_dir}: nothing to aggregate "
            "(run `pipeline execute` first, or check --data-dir)"
        )
    moved: list[str] = []
    vanished = 0
    while True:
        try:
            old_results, old_series, keep, built, replays = _build(
                log, price_of, slo, incremental=incremental, skip_corrupt=skip_corrupt
            )
            break
        except VanishedFileError:
            vanished += 1
            if vanished > _VANISHED_RETRIES:
                raise
        except CorruptEventFileError as exc:
            found = _files_at(log, exc.paths) if skip_corrupt else []
            if not found:  # not asked to skip, or nothing left to move: report it
                raise
            moved += log.quarantine(found)
    results, series = built.results, built.timeseries
    if old_results is not None and old_series is not None:
        kept = pl.col("run_id").is_in(sorted(keep))
        results = pl.concat([old_results.filter(kept).cast(dict(RESULT_SCHEMA)), results])  # type: ignore[arg-type]
        series = pl.concat([old_series.filter(kept).cast(dict(TIMESERIES_SCHEMA)), series])  # type: ignore[arg-type]
    quarantined = (*(where for replay in replays for where in replay.quarantined), *moved)
    # The answers from every result row (kept or rebuilt): a sweep's steps can span an
    # incremental build, and the answer is a pure function of its steps' rows.
    answers = sweeps(results)
    return _Built(results, series, answers, built, old_results is not None, tuple(quarantined))


def _files_at(log: EventLog, wheres: list[str]) -> list[EventFile]:
    """The published event files at `wheres` (of any table), as messages name them."""
    wanted = set(wheres)
    return [item for table in TABLES for item in log.files(table) if item.where in wanted]


def _build(
    log: EventLog, price_of: PriceLookup, slo: SloPolicy, *, incremental: bool, skip_corrupt: bool
) -> tuple[
    pl.DataFrame | None,
    pl.DataFrame | None,
    set[str],
    Aggregates,
    tuple[Replay, Replay, Replay],
]:
    """Replay what must be rebuilt and aggregate it: (previous results and series if reused,
    the runs kept from them, what was built, the three replays)."""
    # Runs first: a run's `finished` record is written after its last request event.
    runs = log.replay("runs", skip_corrupt=skip_corrupt)
    keep: set[str] = set()
    old_results = old_series = None
    if incremental:
        old_results = find_output(log.store, RESULTS)
        old_series = find_output(log.store, TIMESERIES)
    if old_results is None or old_series is None:
        old_results = old_series = None
    else:
        if old_results.columns != list(RESULT_SCHEMA) or old_series.columns != list(
            TIMESERIES_SCHEMA
        ):  # written by another version of this stage: rebuild everything
            old_results = old_series = None
    if old_results is not None:
        present = _event_run_ids(log)  # a run archived since is dropped, as a rebuild would
        keep = _reusable_runs(old_results, runs.collect(), price_of) & present
        keep -= _stale_slo_runs(old_results, slo.lookup(runs.frame))
    todo = None if old_results is None else sorted(present - keep)
    requests = log.replay("requests", run_ids=todo, skip_corrupt=skip_corrupt)
    samples = log.replay("samples", run_ids=todo, skip_corrupt=skip_corrupt)
    runs_todo = runs.frame if todo is None else runs.frame.filter(pl.col("run_id").is_in(todo))
    try:
        sources = requests.batch_sources(COLUMNS)
        built = aggregate(sources, runs_todo, samples.frame, price_of, slo)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError):
        for item in (*runs.files, *requests.files, *samples.files):
            read_file_table(log.store, item)  # a file corrupt past its footer: name it
        raise
    return old_results, old_series, keep, built, (runs, requests, samples)
