"""A sweep is a loop of ordinary runs: execute one step, aggregate it, let the series pick the next.

Each step is `stages.execute.session.execute` with the step's load as its override and the
sweep's tags on its `runs` records, so its events, results and everything downstream are those
of any run. After each step the aggregate runs (incremental: only the new run is replayed), so
the step's outcome the series decides on is the same result row, computed by the same code, as
the one `results/sweeps.parquet` is later derived from; and a sweep stopped by Ctrl-C leaves
every finished step's events and results in place (the interrupted step is recorded as
interrupted and left out of the answer).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from pipeline.config import LoadedConfig
from pipeline.store.layout import SWEEPS
from pipeline.store.location import Location, open_store
from pipeline.store.lock import DEFAULT_LOCK, LockOptions
from schemas import Slo
from stages.aggregate.run import run_aggregate
from stages.aggregate.slo import SloPolicy
from stages.aggregate.transform import PriceLookup
from stages.execute.load.plan import new_run_id
from stages.execute.session import ProgressFactory, ProgressHandle, execute
from stages.sweep.plan import (
    Axis,
    StepOutcome,
    SweepOptions,
    check_sweep,
    make_series,
    step_options,
)

__all__ = ["StepReport", "SweepResult", "run_sweep"]

EXIT_INTERRUPTED, EXIT_TARGET_FAILED = 130, 4


@dataclass(frozen=True)
class StepReport:
    """One finished step, as the terminal and `--json` show it."""

    target: str
    step: int
    axis: Axis
    load: float
    run_id: str
    status: str
    row: dict[str, Any]
    """The step's result row (empty when the run measured nothing)."""
    met_slo: bool | None

    def as_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "target": self.target,
            "step": self.step,
            "axis": self.axis,
            "load": self.load,
            "run_id": self.run_id,
            "status": self.status,
            "throughput_rps": row.get("throughput_rps"),
            "latency_p50_ms": row.get("latency_p50_ms"),
            "latency_p99_ms": row.get("latency_p99_ms"),
            "ttft_p50_ms": row.get("ttft_p50_ms"),
            "error_rate": row.get("error_rate"),
            "slo_attainment": row.get("slo_attainment"),
            "goodput_rps": row.get("goodput_rps"),
            "met_slo": self.met_slo,
        }


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    status: str
    """completed | interrupted."""
    seed: int
    steps: list[StepReport]
    answers: pl.DataFrame
    """This sweep's rows of results/sweeps.parquet."""
    sweeps_path: str
    """Where the answers went: a path, or an object-store URL."""

    @property
    def failed_targets(self) -> list[str]:
        """Targets none of whose measured attempts succeeded, in any step."""
        ok: dict[str, bool] = {}
        for step in self.steps:
            ok[step.target] = ok.get(step.target, False) or bool(step.row.get("successful"))
        return [target for target, good in ok.items() if not good]

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        return EXIT_TARGET_FAILED if self.failed_targets else 0


def _labelled(progress: ProgressFactory | None, prefix: str) -> ProgressFactory | None:
    """The progress factory with the step named before each bar's own description."""
    if progress is None:
        return None
    outer = progress

    @contextmanager
    def bar(description: str, total: int | None) -> Iterator[ProgressHandle]:
        with outer(f"{prefix} {description}", total) as handle:
            yield handle

    return bar


def run_sweep(
    config: LoadedConfig,
    data_dir: Location,
    options: SweepOptions,
    price_of: PriceLookup,
    *,
    progress: ProgressFactory | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    lock: LockOptions = DEFAULT_LOCK,
    slo_policy: SloPolicy | None = None,
) -> SweepResult:
    """Run every target's series, one step (one run) at a time; see the module docstring.

    `slo_policy`: which SLO the aggregate after each step judges results by (as `aggregate`
    and its `--slo` do: `options.slo` is its override); None: none."""
    scenario, targets = check_sweep(config, options, has_slo=_slo_of(config, options) is not None)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    sweep_id = f"sweep-{new_run_id()}"
    steps: list[StepReport] = []
    answers = None
    sweeps_path = open_store(data_dir).where(SWEEPS)
    status = "completed"
    for target in targets:
        series = make_series(options, scenario)
        done: list[StepOutcome] = []
        while status == "completed" and (chosen := series.next_load(done)) is not None:
            axis, load = chosen
            step = len(done)
            result = execute(
                config,
                data_dir,
                replace(
                    step_options(options, axis, load),
                    scenarios=(scenario.name,),
                    targets=(target.name,),
                    seed=seed,
                    preflight=options.preflight and not done,
                ),
                progress=_labelled(progress, f"step {step} ({axis} {load:g})"),
                tags={
                    "sweep_id": sweep_id,
                    "sweep_step": step,
                    "sweep_axis": axis,
                    "sweep_load": load,
                },
            )
            report = run_aggregate(data_dir, price_of, incremental=True, lock=lock, slo=slo_policy)
            answers, sweeps_path = report.sweeps, report.sweeps_path
            found = report.rebuilt.filter(pl.col("run_id") == result.run_id).to_dicts()
            row = found[0] if found else {}
            pair_status = result.pairs[0].status if result.pairs else result.status
            outcome = StepOutcome(
                axis=axis,
                load=load,
                throughput_rps=row.get("throughput_rps"),
                error_rate=row.get("error_rate"),
                attainment=row.get("slo_attainment"),
                met_slo=row.get("slo_met"),
                status=pair_status,
            )
            done.append(outcome)
            shown = StepReport(
                target.name, step, axis, load, result.run_id, pair_status, row, outcome.met_slo
            )
            steps.append(shown)
            if on_step is not None:
                on_step(shown)
            if result.status == "interrupted":
                status = "interrupted"
    mine = answers.filter(pl.col("sweep_id") == sweep_id) if answers is not None else pl.DataFrame()
    return SweepResult(sweep_id, status, seed, steps, mine, sweeps_path)


def _slo_of(config: LoadedConfig, options: SweepOptions) -> Slo | None:
    """The SLO the sweep is judged by: the command line's, else the scenario's (or None)."""
    if options.slo is not None:
        return options.slo
    return config.select_scenarios([options.scenario])[0].slo
