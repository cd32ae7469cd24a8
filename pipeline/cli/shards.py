"""`execute --shards N`: launch the runners of one shared run, then say how it went.

The part of `execute` that starts no request itself: it checks the options once (a bad one exits
2 before any runner starts), picks the run id and the start instant, hands N copies of the
command line to a launcher (`pipeline.cli.launch`: local processes or Ray tasks), and prints a
row per shard under the run's status as its events say (`stages.aggregate.status`), so a shard
that died without a word shows as missing whatever it printed. `shared_status` is also what a
single `execute --shard i/N` prints at its end.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.context import Context
from pipeline.cli.launch import (
    RAY_MISSING,
    ShardOutcome,
    combine_exit_codes,
    run_local,
    run_on_ray,
    shard_argv,
)
from pipeline.cli.ui import echo_json, print_table
from pipeline.store.location import Location

if TYPE_CHECKING:
    from stages.execute.load.plan import ExecuteOptions

__all__ = ["LAUNCH_DELAY", "launch", "shared_status"]

LAUNCH_DELAY = {"local": timedelta(seconds=5), "ray": timedelta(seconds=30)}
"""A launcher's default `--start-at`: time for every runner to start, load and pre-flight, so
they begin together (a runner that is later says so and starts at once)."""


def shared_status(data_dir: Location, run_id: str) -> tuple[str, int | None, str | None]:
    """The whole run's status as its events say, over every shard that wrote any (`running`
    when none did)."""
    from pipeline.store.eventlog import EventLog
    from stages.aggregate.status import overall, run_status

    runs = EventLog(data_dir).replay("runs", run_ids=[run_id]).frame.collect()
    return overall(run_status(runs))


def _child_options(ctx: Context, options: ExecuteOptions) -> list[str]:
    """The global options and `execute ...` every launched runner gets (what this one was
    given; the run id, shard and start instant are added per runner)."""
    out = ["--data-dir", str(ctx.data_dir)]
    if ctx.config_path is not None:
        out += ["--config", str(ctx.config_path)]
    out += ["-v"] * ctx.verbose
    out.append("execute")
    for flag, names in (("--scenario", options.scenarios), ("--target", options.targets)):
        for name in names:
            out += [flag, name]
    for flag, value in (
        ("--requests", options.requests),
        ("--concurrency", options.concurrency),
        ("--rate", options.rate),
        ("--duration", options.duration_s),
        ("--seed", options.seed),
        ("--workers", options.workers),
    ):
        if value is not None:
            out += [flag, repr(value)]
    if not options.preflight:
        out.append("--no-preflight")
    return out


def launch(
    ctx: Context, options: ExecuteOptions, count: int, ray_address: str | None, as_json: bool
) -> int:
    """`--shards N`: check once here (a bad input exits 2 before any runner starts), start the
    N runners, then say how each ended and what the run's events say."""
    from stages.execute.load.plan import new_run_id, prepare

    run_id = options.run_id or new_run_id()
    runs, _ = prepare(ctx.config, replace(options, run_id=run_id))  # bad input: exit 2 now
    for run in runs:
        if run.plan.concurrency < count:
            raise click.BadParameter(
                f"{count} shards, but scenario {run.scenario.name!r} has concurrency_level "
                f"{run.plan.concurrency} (each shard needs a slot); raise it (--concurrency) or "
                "use fewer shards",
                param_hint="'--shards'",
            )
    if ray_address is not None:
        try:
            import ray  # noqa: F401 - only to say so now, before anything starts
        except ImportError:
            raise click.UsageError(RAY_MISSING) from None
    kind = "local" if ray_address is None else "ray"
    start_at = options.start_at or datetime.now(UTC) + LAUNCH_DELAY[kind]
    base = _child_options(ctx, options)
    argvs = [shard_argv(base, run_id, i, count, start_at) for i in range(count)]
    ctx.info(
        f"run {run_id}: {count} shard{'s' if count > 1 else ''} "
        f"({'local processes' if ray_address is None else 'Ray tasks'}), starting at "
        f"{start_at.isoformat()}"
    )
    if ray_address is None:
        outcomes = run_local(argvs)
    else:
        outcomes = run_on_ray(argvs, ray_address, Path.cwd())
    code = combine_exit_codes([o.code for o in outcomes])
    status, _, missing = shared_status(ctx.data_dir, run_id)
    if missing is None and status == "running":  # no runner wrote a record (all stopped early)
        status, missing = "not started", ",".join(f"{i}/{count}" for i in range(count))
    if as_json:
        echo_json(
            {
                "run_id": run_id,
                "run_status": status,
                "shards": count,
                "missing_shards": missing,
                "exit_code": code,
                "shard_results": [_shard_json(o, count) for o in outcomes],
            }
        )
    elif not ctx.quiet:
        rows = [_shard_row(o, count) for o in outcomes]
        title = f"run {run_id}: {_status_text(status, count, missing)}"
        print_table(title, rows, ["shard", "exit", "status", "attempts", "ok", "errors", "host"])
        ctx.info(f"events in {ctx.store.where('events')} (run_id {run_id}); pipeline aggregate")
    return code


def _shard_json(outcome: ShardOutcome, count: int) -> dict[str, Any]:
    return {
        "shard": f"{outcome.shard}/{count}",
        "exit_code": outcome.code,
        **(outcome.summary or {}),
    }


def _shard_row(outcome: ShardOutcome, count: int) -> dict[str, Any]:
    pairs = (outcome.summary or {}).get("results", [])
    return {
        "shard": f"{outcome.shard}/{count}",
        "exit": outcome.code,
        "status": (outcome.summary or {}).get("status", "no summary"),
        "attempts": sum(p.get("requests", 0) for p in pairs),
        "ok": sum(p.get("ok", 0) for p in pairs),
        "errors": sum(p.get("errors", 0) for p in pairs),
        "host": outcome.host,
    }


def _status_text(status: str, count: int | None, missing: str | None) -> str:
    from stages.aggregate.status import status_text

    return status_text(status, count, missing)
