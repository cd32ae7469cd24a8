"""The thin launchers of a shared run (`execute --shards N`): local processes, or Ray tasks.

A launcher decides nothing a runner decides: it picks the run id and the start instant once,
then starts N ordinary `pipeline execute --run-id R --shard i/N --start-at T` processes (the
same options, `-q --json` so each prints one summary), waits for all of them and combines their
exit codes. The run's status comes from the events afterwards (`stages.aggregate.status`), so a
shard that died without a word shows as missing there, whatever it printed.

Local processes share the launcher's process group: a Ctrl-C at the terminal reaches every one
of them, and a SIGINT or SIGTERM sent to the launcher alone is forwarded to each (they record
their requests in flight as cancelled and exit 130). A runner still alive `STOP_GRACE_S` after
that is killed. On Ray (`--ray [ADDRESS]`, the optional `ray` extra) each shard is one Ray task
running the same command on whichever node Ray places it; the data directory must then be one
every node reaches (an object store, a shared file system).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from pipeline.cli.context import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK

__all__ = [
    "RAY_MISSING",
    "STOP_GRACE_S",
    "ShardOutcome",
    "combine_exit_codes",
    "run_local",
    "run_on_ray",
    "runner_code",
    "shard_argv",
]

STOP_GRACE_S = 30.0
"""How long a stopped runner gets to record its cancelled requests before it is killed."""
RAY_MISSING = (
    "--ray needs the optional ray extra, which is not installed: pip install "
    "'llm-bench-pipeline[ray]' (or run the shards as local processes with --shards alone)"
)
_SEVERITY = (EXIT_INTERRUPTED, EXIT_BAD_INPUT, EXIT_FAILURE, 4, EXIT_OK)
"""The combined exit code is the first of these any runner gave: a stop beats bad input beats a
failure beats a target that answered nothing right."""


@dataclass(frozen=True)
class ShardOutcome:
    """What one runner did: its exit code and the JSON summary it printed (None if none)."""

    shard: int
    code: int
    summary: dict[str, Any] | None
    host: str | None = None


def combine_exit_codes(codes: Sequence[int]) -> int:
    """One exit code for the launcher (`_SEVERITY`); a runner killed by a signal is a failure."""
    known = [code if code in _SEVERITY else EXIT_FAILURE for code in codes]
    return next((code for code in _SEVERITY if code in known), EXIT_OK)


def shard_argv(
    base: Sequence[str], run_id: str, shard: int, count: int, start_at: datetime
) -> list[str]:
    """The command of shard `shard`: `python -m pipeline [globals] execute ... --shard i/N`
    (`base`: everything after `python -m pipeline`, ending with execute's own options)."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        *base,
        "--run-id",
        run_id,
        "--shard",
        f"{shard}/{count}",
        "--start-at",
        start_at.isoformat(),
        "-q",
        "--json",
    ]


def _summary(text: str) -> dict[str, Any] | None:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def runner_code(returncode: int) -> int:
    """A signal's death (-9) as a failure; any other code as it is."""
    return EXIT_FAILURE if returncode < 0 else returncode


async def _run_one(
    argv: list[str], shard: int, out: list[ShardOutcome], pids: dict[int, int]
) -> None:
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    pids[shard] = process.pid
    assert process.stdout is not None
    chunks: list[bytes | bytearray] = []
    try:
        async with process.stdout:
            while data := await process.stdout.receive_some(65536):
                chunks.append(data)
        await process.wait()
    finally:
        if process.returncode is None:  # only a failure of ours ends up here: never leave one
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    text = b"".join(chunks).decode(errors="replace")
    pids.pop(shard, None)
    host = socket.gethostname()
    out.append(ShardOutcome(shard, runner_code(process.returncode or 0), _summary(text), host))


def _signal_all(pids: dict[int, int], signum: int) -> None:
    for pid in list(pids.values()):  # each runner by its own pid, never a process group
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


async def _forward_stops(pids: dict[int, int], *, task_status: trio.TaskStatus[None]) -> None:
    """Forward SIGINT/SIGTERM to every runner still running; kill what outlives the grace."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            _signal_all(pids, signum)
            await trio.sleep(STOP_GRACE_S)
            _signal_all(pids, signal.SIGKILL)


async def _launch(argvs: list[list[str]]) -> list[ShardOutcome]:
    out: list[ShardOutcome] = []
    pids: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_forward_stops, pids)
        async with trio.open_nursery() as runners:
            for shard, argv in enumerate(argvs):
                runners.start_soon(_run_one, argv, shard, out, pids)
        nursery.cancel_scope.cancel()
    return sorted(out, key=lambda o: o.shard)


def run_local(argvs: list[list[str]]) -> list[ShardOutcome]:
    """Run every shard's command as a local process at once; their outcomes, by shard."""
    return trio.run(_launch, argvs)


def run_on_ray(argvs: list[list[str]], address: str | None, cwd: Path) -> list[ShardOutcome]:
    """One Ray task per shard, each running its command where Ray places it (`address`: an
    existing cluster, or None to start a local one). Raises ImportError without ray."""
    # Ray reports usage statistics to its makers by default; a benchmark's launcher does not
    # phone home unless told to (set RAY_USAGE_STATS_ENABLED=1 to allow it).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:  # a cluster of this machine alone: it listens on the loopback address only
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_ray_shard)
        refs = [task.remote(argv, str(cwd)) for argv in argvs]
        try:
            results = ray.get(refs)
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)  # the task forwards it to its runner as SIGTERM (exit 130)
            results = [_cancelled(ray, ref) for ref in refs]
    finally:
        ray.shutdown()
    return [
        ShardOutcome(shard, runner_code(code), _summary(text), host)
        for shard, (code, text, host) in enumerate(results)
    ]


def _cancelled(ray: Any, ref: Any) -> tuple[int, str, str | None]:
    try:
        result: tuple[int, str, str | None] = ray.get(ref, timeout=STOP_GRACE_S)
        return result
    except Exception:  # noqa: BLE001 - a cancelled or lost task is an interrupted shard
        return EXIT_INTERRUPTED, "", None


def _ray_shard(argv: list[str], cwd: str) -> tuple[int, str, str | None]:
    """Inside a Ray worker: run the shard's command, forward a cancel to it as SIGTERM.

    The command is the one a local launcher would run (`sys.executable -m pipeline ...`), but on
    the worker's own interpreter, from `cwd` when that exists there (a relative config path
    then means what it meant to the launcher)."""
    command = [sys.executable, *argv[1:]]
    where = cwd if os.path.isdir(cwd) else None
    process = subprocess.Popen(command, cwd=where, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    return process.returncode, out, socket.gethostname()
