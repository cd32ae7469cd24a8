"""Realistic request/run/sample events, fast enough for 10M rows, written through the real EventLog.

Properties and benchmarks need many runs of a known shape, quickly and without a server: events
that look like what `execute` writes (a closed loop of C workers, warmup requests first, streamed
answers whose chunk offsets grow by an inter-token gap, injected errors of every type with retries
as extra attempts, cancelled tail requests in an interrupted run, ~10 client samples per second).
The columns are built with numpy, so a 100k-request run takes well under a second. The end-to-end
test uses the real `pipeline execute` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.store.eventlog import EventLog
from schemas import ERROR_TYPES, TABLES, event_id

__all__ = [
    "RunSpec",
    "conform_table",
    "many",
    "request_table",
    "run_table",
    "sample_table",
    "write_run",
    "write_runs",
]

EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# "Missing" for np.where: the object-dtype scalar a bare None becomes anyway (numpy's stubs
# accept only array-likes there).
_NULL = np.array(None, dtype=object)
_HTTP = {
    "rate_limited": 429,
    "server_error": 503,
    "client_error": 400,
    "timeout": None,
    "connection": None,
    "protocol": 200,
    "cancelled": None,
}
_STATUS = {"timeout": "timeout", "cancelled": "cancelled"}


@dataclass(frozen=True)
class RunSpec:
    """One run of one scenario against one target, and how its synthetic requests behave."""

    run_id: str
    scenario: str = "chat"
    target: str = "mock-fast"
    provider: str = "mock"
    model: str = "mock-small"
    requests: int = 200
    concurrency: int = 4
    warmup: int = 2
    error_rate: float = 0.05
    retry_rate: float = 0.5
    """Share of failed attempts that get one more attempt."""
    ttft_ms: float = 40.0
    itl_ms: float = 8.0
    output_tokens: tuple[int, int] = (4, 24)
    """Uniform range of output tokens (one chunk per token)."""
    input_tokens: tuple[int, int] = (20, 400)
    cached_share: float = 0.25
    status: str = "completed"
    """The run's final status; `interrupted` also cancels the last few requests."""
    finished: bool = True
    """False leaves the run without a `finished` record (still running)."""
    start: datetime = EPOCH
    seed: int = 0
    samples_per_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


def _rng(spec: RunSpec, salt: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, salt, sum(spec.run_id.encode())])


def request_table(spec: RunSpec) -> pa.Table:
    """The run's request attempts in start order, with the `requests` table's exact schema."""
    rng = _rng(spec, 1)
    n = spec.requests
    low, high = max(1, spec.output_tokens[0]), max(1, spec.output_tokens[1])
    out_tok = rng.integers(low, high + 1, n)
    in_tok = rng.integers(spec.input_tokens[0], spec.input_tokens[1] + 1, n)
    ttft = np.maximum(1, rng.gamma(8.0, spec.ttft_ms * 1000 / 8.0, n)).astype(np.int64)
    # Chunk arrival offsets: TTFT, then one gap per further token (jittered around itl_ms).
    total_chunks = int(out_tok.sum())
    gaps = np.maximum(1, rng.gamma(4.0, spec.itl_ms * 1000 / 4.0, total_chunks)).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(out_tok)])
    gaps[bounds[:-1]] = ttft  # each request's first "gap" is its TTFT
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[bounds[:-1]] - ttft, out_tok)
    last = offsets[bounds[1:] - 1]
    latency = last + rng.integers(50, 500, n)

    failed = rng.random(n) < spec.error_rate
    kinds = np.array([t for t in ERROR_TYPES if t != "cancelled"])
    err = np.where(failed, kinds[rng.integers(0, len(kinds), n)], _NULL)
    if spec.status == "interrupted":
        tail = max(1, min(spec.concurrency, n // 10))
        failed[-tail:] = True
        err[-tail:] = "cancelled"
    retry = failed & (rng.random(n) < spec.retry_rate) & (err != "cancelled")

    # Closed loop: C workers, each starting its next request when the previous one ends.
    mean_latency = float(latency.mean()) if n else 0.0
    spacing = mean_latency / max(1, spec.concurrency)
    start_us = (np.arange(n) * spacing + rng.integers(0, 2000, n)).astype(np.int64)
    err_latency = rng.integers(200, 20_000, n)
    latency = np.where(failed, err_latency, latency)

    # Retries: a second attempt of the same request, after the failed one.
    idx = np.concatenate([np.arange(n), np.flatnonzero(retry)])
    attempt = np.concatenate([np.ones(n, np.int64), np.full(int(retry.sum()), 2)])
    order = np.lexsort((attempt, idx))
    idx, attempt = idx[order], attempt[order]
    second = attempt == 2
    ok = ~failed[idx] | second
    error_type = np.where(ok, _NULL, err[idx])
    status = np.where(ok, "ok", "error").astype(object)
    for kind, value in _STATUS.items():
        status[error_type == kind] = value
    http = np.full(len(idx), 200, dtype=np.int64)
    http_mask = np.zeros(len(idx), bool)
    for kind, code in _HTTP.items():
        hit = error_type == kind
        if code is None:
            http_mask |= hit
        else:
            http[hit] = code
    started = start_us[idx] + np.where(second, latency[idx] + 1000, 0)
    lat = np.where(ok, np.where(second, last[idx] + 300, latency[idx]), latency[idx])
    # Chunk lists: successful attempts carry their chunks; failures carry none.
    keep = ok
    lengths = np.where(keep, out_tok[idx], 0)
    pieces = [offsets[bounds[i] : bounds[i + 1]] for i in idx[keep]]
    values = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
    list_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    chunks = pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(values, pa.int64()))
    rows = len(idx)
    queue = rng.integers(0, 3000, rows)
    started_at = np.datetime64(spec.start.replace(tzinfo=None), "us") + started.astype(
        "timedelta64[us]"
    )
    cached = np.where(ok, (in_tok[idx] * spec.cached_share * rng.random(rows)).astype(np.int64), 0)
    columns: dict[str, Any] = {
        "event_id": [
            event_id(spec.run_id, spec.scenario, spec.target, i, a)
            for i, a in zip(idx.tolist(), attempt.tolist(), strict=True)
        ],
        "run_id": [spec.run_id] * rows,
        "scenario": [spec.scenario] * rows,
        "target": [spec.target] * rows,
        "provider": [spec.provider] * rows,
        "model": [spec.model] * rows,
        "worker": idx % max(1, spec.concurrency),
        "request_index": idx,
        "prompt_index": idx % 7,
        "attempt": attempt,
        "warmup": idx < spec.warmup,
        "streaming": np.ones(rows, bool),
        "scheduled_at": pa.array(
            started_at - queue.astype("timedelta64[us]"), pa.timestamp("us", "UTC")
        ),
        "started_at": pa.array(started_at, pa.timestamp("us", "UTC")),
        "queue_us": queue,
        "ttft_us": pa.array(np.where(ok, ttft[idx], 0), mask=~ok),
        "latency_us": lat,
        "chunk_offsets_us": chunks,
        "input_tokens": pa.array(np.where(ok, in_tok[idx], 0), mask=~ok),
        "output_tokens": pa.array(np.where(ok, out_tok[idx], 0), mask=~ok),
        "cached_tokens": pa.array(cached, mask=~ok),
        "token_source": pa.array(np.where(ok, "server", _NULL)),
        "status": status,
        "http_status": pa.array(http, mask=http_mask),
        "error_type": pa.array(error_type),
        "bytes_sent": in_tok[idx] * 4,
        "bytes_received": np.where(ok, out_tok[idx] * 60, 120),
    }
    return conform_table("requests", columns)


def conform_table(table: str, columns: dict[str, Any]) -> pa.Table:
    """Columns in the table's schema order; absent ones null, or the model's default if required."""
    spec = TABLES[table]
    rows = len(next(iter(columns.values())))
    arrays = []
    for f in spec.schema:
        value = columns.get(f.name)
        if value is None:
            default = spec.model.model_fields[f.name].default
            value = pa.nulls(rows, f.type) if f.nullable else pa.array([default] * rows, f.type)
        elif not isinstance(value, pa.Array | pa.ChunkedArray):
            value = pa.array(value, f.type)
        arrays.append(value.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=spec.schema)


def run_table(spec: RunSpec, requests: pa.Table | None = None) -> pa.Table:
    """The run's `started` record, and its `finished` one unless `spec.finished` is False."""
    table = requests if requests is not None else request_table(spec)
    ends = table.column("started_at").to_numpy().astype("datetime64[us]")
    lat = table.column("latency_us").fill_null(0).to_numpy().astype("timedelta64[us]")
    finished_at = (
        (ends + lat).max().astype(datetime).replace(tzinfo=UTC) if len(ends) else spec.start
    )
    kinds = ["started", "finished"] if spec.finished else ["started"]
    common = {
        "run_id": spec.run_id,
        "scenario": spec.scenario,
        "target": spec.target,
        "provider": spec.provider,
        "model": spec.model,
        "mode": "closed",
        "concurrency": spec.concurrency,
        "planned_requests": spec.requests,
        "config_hash": f"{spec.seed:016x}",
        "python": "3.11",
        "os": "linux",
        "arch": "x86_64",
        "cpus": 2,
    }
    rows = [
        {
            **common,
            "event_id": event_id(spec.run_id, spec.scenario, spec.target, kind),
            "kind": kind,
            "at": (spec.start - timedelta(milliseconds=5)) if kind == "started" else finished_at,
            "status": "running" if kind == "started" else spec.status,
            "requests_sent": None if kind == "started" else table.num_rows,
        }
        for kind in kinds
    ]
    return conform_table("runs", {k: [r[k] for r in rows] for k in rows[0]})


def sample_table(spec: RunSpec, duration_s: float) -> pa.Table:
    """Client samples every 1/samples_per_s seconds; RSS drifts up and settles."""
    rng = _rng(spec, 3)
    n = max(1, int(duration_s * spec.samples_per_s))
    offset = (np.arange(n) * 1e6 / spec.samples_per_s).astype(np.int64)
    at = np.datetime64(spec.start.replace(tzinfo=None), "us") + offset.astype("timedelta64[us]")
    rss = (80 << 20) + np.minimum(np.arange(n), 50) * (1 << 18) + rng.integers(0, 1 << 16, n)
    columns: dict[str, Any] = {
        "event_id": [event_id(spec.run_id, "sample", i) for i in range(n)],
        "run_id": [spec.run_id] * n,
        "scenario": [spec.scenario] * n,
        "target": [spec.target] * n,
        "at": pa.array(at, pa.timestamp("us", "UTC")),
        "offset_us": offset,
        "rss_bytes": rss,
        "cpu_user_us": np.cumsum(rng.integers(0, 20_000, n)),
        "cpu_system_us": np.cumsum(rng.integers(0, 5_000, n)),
        "in_flight": rng.integers(0, spec.concurrency + 1, n),
    }
    return conform_table("samples", columns)


def write_run(
    log: EventLog, spec: RunSpec, *, batch_rows: int = 10_000, writer: str = "w0"
) -> pa.Table:
    """Write the run's requests (in batches, one file each), runs and samples; return the requests."""
    requests = request_table(spec)
    out = log.writer(spec.run_id, writer)
    for start in range(0, requests.num_rows, batch_rows):
        out.append("requests", requests.slice(start, batch_rows))
    runs = run_table(spec, requests)
    out.append("runs", runs)
    at = runs.column("at").to_pylist()
    out.append("samples", sample_table(spec, (at[-1] - at[0]).total_seconds()))
    return requests


def write_runs(log: EventLog, specs: list[RunSpec], **kwargs: Any) -> list[pa.Table]:
    return [write_run(log, spec, **kwargs) for spec in specs]


def many(prefix: str, count: int, **overrides: Any) -> list[RunSpec]:
    """`count` runs over two targets and two scenarios, a minute apart (seed: the index unless given)."""
    base = RunSpec(run_id=f"{prefix}-0")
    targets = [("mock-fast", "mock-small"), ("mock-slow", "mock-large")]
    out = []
    for i in range(count):
        target, model = targets[i % 2]
        out.append(
            replace(
                base,
                run_id=f"{prefix}-{i:03d}",
                scenario=("chat", "long")[(i // 2) % 2],
                target=target,
                model=model,
                start=EPOCH + timedelta(minutes=i),
                **{"seed": i, **overrides},
            )
        )
    return out


def slowing_history(count: int, growth: float, requests: int = 120) -> list[RunSpec]:
    """`count` daily error-free runs of chat@mock-fast whose TTFT grows by `growth` per run."""
    return [
        RunSpec(
            f"day-{i}",
            requests=requests,
            error_rate=0.0,
            ttft_ms=40.0 * growth**i,
            seed=i,
            start=EPOCH + timedelta(days=i),
        )
        for i in range(count)
    ]
