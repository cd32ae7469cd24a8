"""Buffers events as columns and publishes them in batches, off the event loop.

The hot path only appends Python scalars to lists (no model, no Arrow, no I/O per event). A
flusher task swaps the buffers out at least once a second and hands them to `EventWriter.append`
in a worker thread (`trio.to_thread`), so writing, compressing and fsyncing a file never stalls a
request's timing. One lock keeps the writer's file sequence single-file. Instants are derived
from one (wall clock, perf_counter) anchor taken at the start, so `started_at` and every duration
come from the same monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from time import perf_counter_ns
from typing import Any

import trio

from pipeline.errors import InputError, StoreError
from pipeline.store.eventlog import EventWriter, conform
from schemas import SCHEMA_VERSION, TABLES, event_id
from stages.execute.client.providers.base import Attempt

__all__ = ["Clock", "Recorder", "salvage"]

_REQUEST_COLUMNS = (
    "event_id",
    "schema_version",
    "run_id",
    "scenario",
    "target",
    "provider",
    "model",
    "worker",
    "shard",
    "request_index",
    "prompt_index",
    "attempt",
    "warmup",
    "streaming",
    "scheduled_at",
    "started_at",
    "queue_us",
    "ttft_us",
    "latency_us",
    "chunk_offsets_us",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "token_source",
    "status",
    "http_status",
    "error_type",
    "error_message",
    "bytes_sent",
    "bytes_received",
    "tool_calls",
    "server_request_id",
    "reconnects",
    "input_token_rule",
    "output_token_rule",
)
_SAMPLE_COLUMNS = (
    "event_id",
    "schema_version",
    "run_id",
    "worker",
    "shard",
    "scenario",
    "target",
    "at",
    "offset_us",
    "rss_bytes",
    "cpu_user_us",
    "cpu_system_us",
    "in_flight",
    "loop_lag_us",
)


class Clock:
    """Maps perf_counter_ns to UTC microseconds through one anchor taken at construction."""

    __slots__ = ("mono_ns", "wall_us")

    def __init__(self, anchor: tuple[int, int] | None = None) -> None:
        """`anchor` (wall µs, perf_counter ns): a worker process shares its parent's clock.

        perf_counter is the system-wide monotonic clock, so one anchor serves every process.
        """
        if anchor is None:
            anchor = (time.time_ns() // 1000, perf_counter_ns())
        self.wall_us, self.mono_ns = anchor

    @property
    def anchor(self) -> tuple[int, int]:
        return self.wall_us, self.mono_ns

    def utc_us(self, mono_ns: int) -> int:
        return self.wall_us + (mono_ns - self.mono_ns) // 1000

    def utc(self, mono_ns: int) -> datetime:
        return datetime.fromtimestamp(self.utc_us(mono_ns) / 1e6, tz=UTC)


def _empty(columns: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [] for name in columns}


class Recorder:
    """Column buffers for `requests` and `samples`; `flush()` publishes them; `runs` go at once."""

    def __init__(
        self, writer: EventWriter, clock: Clock, worker: int = 0, shard: int | None = None
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.run_id = writer.run_id
        self.worker = worker
        self.shard = shard
        """This runner's shard of a shared run: in every row, and in the sample ids (two
        runners' worker 0 may sample at the same nanosecond of their own clocks)."""
        self._id_tail: tuple[object, ...] = () if shard is None else (f"shard {shard}",)
        self._requests = _empty(_REQUEST_COLUMNS)
        self._samples = _empty(_SAMPLE_COLUMNS)
        self._lock = trio.Lock()
        self.scenario = ""
        self.target = ""
        self.provider = ""
        self.model = ""
        self.files_written = 0

    def set_pair(self, scenario: str, target: str, provider: str, model: str) -> None:
        self.scenario, self.target, self.provider, self.model = scenario, target, provider, model

    def add_request(
        self,
        *,
        request_index: int,
        prompt_index: int,
        attempt_no: int,
        warmup: bool,
        streaming: bool,
        scheduled_ns: int,
        attempt: Attempt,
    ) -> None:
        """Append one attempt as a row (called once per attempt, after it ended)."""
        start = attempt.start_ns
        cols = self._requests
        cols["event_id"].append(
            event_id(self.run_id, self.scenario, self.target, request_index, attempt_no)
        )
        cols["schema_version"].append(SCHEMA_VERSION)
        cols["run_id"].append(self.run_id)
        cols["scenario"].append(self.scenario)
        cols["target"].append(self.target)
        cols["provider"].append(self.provider)
        cols["model"].append(self.model)
        cols["worker"].append(self.worker)
        cols["shard"].append(self.shard)
        cols["request_index"].append(request_index)
        cols["prompt_index"].append(prompt_index)
        cols["attempt"].append(attempt_no)
        cols["warmup"].append(warmup)
        cols["streaming"].append(streaming)
        cols["scheduled_at"].append(self.clock.utc_us(scheduled_ns))
        cols["started_at"].append(self.clock.utc_us(start))
        cols["queue_us"].append(max(0, (start - scheduled_ns) // 1000))
        chunks = attempt.chunk_ns
        cols["ttft_us"].append((chunks[0] - start) // 1000 if chunks else None)
        cols["latency_us"].append(
            max(0, (attempt.end_ns - start) // 1000) if attempt.end_ns else None
        )
        cols["chunk_offsets_us"].append([(t - start) // 1000 for t in chunks])
        cols["input_tokens"].append(attempt.input_tokens)
        cols["output_tokens"].append(attempt.output_tokens)
        cols["cached_tokens"].append(attempt.cached_tokens)
        cols["token_source"].append(attempt.token_source)
        cols["status"].append(attempt.status)
        cols["http_status"].append(attempt.http_status)
        cols["error_type"].append(attempt.error_type)
        cols["error_message"].append(attempt.error_message)
        cols["bytes_sent"].append(attempt.bytes_sent)
        cols["bytes_received"].append(attempt.bytes_received)
        cols["tool_calls"].append(attempt.tool_calls)
        cols["server_request_id"].append(attempt.server_request_id)
        cols["reconnects"].append(attempt.reconnects)
        cols["input_token_rule"].append(attempt.input_rule)
        cols["output_token_rule"].append(attempt.output_rule)

    def add_sample(
        self,
        mono_ns: int,
        rss: int,
        user_us: int,
        system_us: int,
        in_flight: int,
        lag_us: int | None = None,
    ) -> None:
        cols = self._samples
        cols["event_id"].append(
            event_id(
                self.run_id,
                "sample",
                self.worker,
                self.scenario,
                self.target,
                mono_ns,
                *self._id_tail,
            )
        )
        cols["schema_version"].append(SCHEMA_VERSION)
        cols["run_id"].append(self.run_id)
        cols["worker"].append(self.worker)
        cols["shard"].append(self.shard)
        cols["scenario"].append(self.scenario)
        cols["target"].append(self.target)
        cols["at"].append(self.clock.utc_us(mono_ns))
        cols["offset_us"].append(max(0, (mono_ns - self.clock.mono_ns) // 1000))
        cols["rss_bytes"].append(rss)
        cols["cpu_user_us"].append(user_us)
        cols["cpu_system_us"].append(system_us)
        cols["in_flight"].append(in_flight)
        cols["loop_lag_us"].append(lag_us)

    @property
    def pending(self) -> int:
        return len(self._requests["event_id"]) + len(self._samples["event_id"])

    async def flush(self) -> None:
        """Publish what is buffered (one file per table with rows), in a worker thread."""
        # Shielded: once buffers are swapped out they must reach the log, even mid-cancellation.
        with trio.CancelScope(shield=True):
            await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            batches: list[tuple[str, dict[str, list[Any]]]] = []
            if self._requests["event_id"]:
                batches.append(("requests", self._requests))
                self._requests = _empty(_REQUEST_COLUMNS)
            if self._samples["event_id"]:
                batches.append(("samples", self._samples))
                self._samples = _empty(_SAMPLE_COLUMNS)
            for table, columns in batches:
                await self._append(table, columns)
                self.files_written += 1

    async def _append(self, table: str, columns: Mapping[str, Any]) -> None:
        try:
            await trio.to_thread.run_sync(self._publish, table, columns)
        except OSError as exc:
            where = self.writer.log.events_dir
            raise StoreError(f"cannot write {table} events under {where}: {exc}") from exc

    def _publish(self, table: str, columns: Mapping[str, Any]) -> None:
        """Append the batch; if a value in it does not fit its column (which the providers'
        checks should make impossible), keep every row anyway (`salvage`): one bad reply must
        never take the batch's good events with it."""
        try:
            self.writer.append(table, columns)
        except InputError:
            if table != "requests":
                raise
            self.writer.append(table, salvage(columns))

    async def flush_every(self, interval_s: float = 1.0) -> None:
        """Flush at least every `interval_s` until cancelled (the caller flushes once more)."""
        while True:
            await trio.sleep(interval_s)
            await self.flush()

    async def write_run(self, row: Mapping[str, Any]) -> None:
        """Publish one `runs` event now (they are rare and must not wait for a flush)."""
        columns = {key: [value] for key, value in row.items()}
        async with self._lock:
            await self._append("runs", columns)


_KEEP = frozenset(
    ("event_id", "schema_version", "run_id", "scenario", "target", "provider", "model", "worker")
    + ("shard",)
    + ("request_index", "prompt_index", "attempt", "warmup", "streaming", "scheduled_at")
    + ("started_at", "queue_us", "bytes_sent", "bytes_received", "tool_calls", "reconnects")
)
"""Columns the recorder fills from its own state, never from a reply: always storable."""


def salvage(columns: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """The batch with each row that does not fit the table (checked alone) replaced by the same
    attempt as a `protocol` error whose reply-derived values are left empty."""
    spec = TABLES["requests"]
    out: dict[str, list[Any]] = {name: list(values) for name, values in columns.items()}
    for row in range(len(out["event_id"])):
        try:
            conform(spec, {name: [values[row]] for name, values in out.items()})
        except InputError:
            for name, values in out.items():
                if name not in _KEEP:
                    values[row] = None
            out["status"][row] = "error"
            out["error_type"][row] = "protocol"
            out["error_message"][row] = "the reply held a value that cannot be stored"
            out["chunk_offsets_us"][row] = []
    return out
