"""The immutable events `execute` appends, and the stored tables they live in.

Each table's Arrow schema is derived from its pydantic model (`schemas.arrow`), the one source.
Durations are int64 microseconds from a monotonic clock; instants are UTC. New columns are added
with a default so older files read as null.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pyarrow as pa
from pydantic import Field

from schemas._base import Frozen
from schemas._types import SafeName, UtcDatetime
from schemas.arrow import arrow_schema

__all__ = [
    "ERROR_TYPES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TABLES",
    "RequestEvent",
    "ResourceSample",
    "RunEvent",
    "TableSpec",
    "event_id",
]

SCHEMA_VERSION = 1
RequestStatus = Literal["ok", "error", "timeout", "cancelled"]
ERROR_TYPES = (
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection",
    "protocol",
    "cancelled",
)
RunStatus = Literal["running", "completed", "interrupted", "failed", "timed_out"]
RUN_STATUSES = ("running", "completed", "interrupted", "failed", "timed_out")

NonNeg = Field(ge=0)


def event_id(*parts: object) -> str:
    """A deterministic id from the parts that make an event unique (32 hex chars)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class RequestEvent(Frozen):
    """One request attempt, with its raw timings. Errors are events too."""

    event_id: str
    schema_version: int = SCHEMA_VERSION
    run_id: SafeName
    scenario: SafeName
    target: SafeName
    provider: str
    model: str
    worker: int = Field(default=0, ge=0)
    shard: int | None = Field(default=None, ge=0)
    """The runner's shard (0-based, of the run's `shards`) when the run is shared; null when one
    runner played it all."""
    request_index: int = Field(ge=0)
    prompt_index: int = Field(ge=0)
    attempt: int = Field(default=1, ge=1)
    warmup: bool = False
    streaming: bool = False
    scheduled_at: UtcDatetime
    started_at: UtcDatetime
    queue_us: int = Field(default=0, ge=0)
    ttft_us: int | None = Field(default=None, ge=0)
    latency_us: int | None = Field(default=None, ge=0)
    chunk_offsets_us: list[int] = Field(default_factory=list)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)
    token_source: Literal["server", "estimated"] | None = None
    status: RequestStatus
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    bytes_sent: int = Field(default=0, ge=0)
    bytes_received: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    server_request_id: str | None = None
    reconnects: int = Field(default=0, ge=0)
    """Times the request went out again on a new connection because the kept-alive one had been
    closed by the server before it answered a byte (the server never took it; one attempt)."""
    input_token_rule: str | None = None
    output_token_rule: str | None = None
    """How each count was obtained: server | calibrated | chars/4 | chunks (docs/execute.md)."""


class RunEvent(Frozen):
    """A run of one scenario against one target: a `started` record, then a `finished` one."""

    event_id: str
    schema_version: int = SCHEMA_VERSION
    run_id: SafeName
    scenario: SafeName
    target: SafeName
    provider: str
    model: str
    kind: Literal["started", "finished"]
    at: UtcDatetime
    status: RunStatus
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = Field(default=1, ge=1)
    planned_requests: int | None = Field(default=None, ge=0)
    rate: float | None = None
    seed: int | None = None
    workers: int = Field(default=1, ge=1)
    config_hash: str = ""
    scenario_config: str = "{}"
    """The scenario as JSON."""
    target_config: str = "{}"
    """The target as JSON, without secrets (only the name of the key's variable)."""
    python: str = ""
    os: str = ""
    arch: str = ""
    cpus: int = Field(default=0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)
    package_version: str = ""
    requests_sent: int | None = Field(default=None, ge=0)
    message: str | None = None
    client_cpu_saturation: float | None = Field(default=None, ge=0.0, le=1.0)
    """On `finished`: the largest share of the run any client process spent above 90% of a
    core (stages.execute.record.capacity); null when too short to judge."""
    client_saturated: bool | None = None
    """On `finished`: the client was too busy for its timings to be trusted (share > 0.2)."""
    client_loop_lag_p95_ms: float | None = Field(default=None, ge=0.0)
    """On `finished`: the largest p95, over the client processes, of how late their resource
    sampler woke (`samples.loop_lag_us`): high when other processes starve the client."""
    token_calibration: str | None = None
    """On `started`, when the target has `calibrate_tokens`: JSON `{prompt_index: input tokens}`
    as the target counted them, asked once per distinct prompt before the run."""
    shard: int | None = Field(default=None, ge=0)
    """This record's runner, 0-based, when runners share the run (`--shard i/N`); else null."""
    shards: int | None = Field(default=None, ge=1)
    """N: how many runners share the run; it is `completed` only when all N have finished."""
    host: str | None = None
    """The runner's host name (where the requests went out from)."""
    clock_offset_us: int | None = None
    """The data store's clock minus this runner's wall clock, in µs (how it is measured:
    `pipeline.store.clock`); shards on hosts whose offsets differ stamp the same instant apart."""
    start_at: UtcDatetime | None = None
    """`--start-at`: the instant the runner waited for before its first pair, so shards begin
    together."""
    sweep_id: SafeName | None = None
    """Set when the run is a step of `pipeline sweep`: the sweep it belongs to (null otherwise;
    older files read as null, so their runs are ordinary ones)."""
    sweep_step: int | None = Field(default=None, ge=0)
    """The step's place in its sweep's series (0 first), in the order the steps ran."""
    sweep_axis: Literal["concurrency", "rate"] | None = None
    """What the sweep varies: the closed loop's concurrency or the open loop's rate."""
    sweep_load: float | None = Field(default=None, gt=0)
    """The step's load on that axis (in flight, or requests/s)."""


class ResourceSample(Frozen):
    """The client's own resources, sampled during a run (~every 100 ms)."""

    event_id: str
    schema_version: int = SCHEMA_VERSION
    run_id: SafeName
    worker: int = Field(default=0, ge=0)
    shard: int | None = Field(default=None, ge=0)
    scenario: str | None = None
    target: str | None = None
    at: UtcDatetime
    offset_us: int = Field(ge=0)
    rss_bytes: int = Field(ge=0)
    cpu_user_us: int = Field(ge=0)
    cpu_system_us: int = Field(ge=0)
    in_flight: int = Field(ge=0)
    loop_lag_us: int | None = Field(default=None, ge=0)
    """How late the sampler woke for this sample, past its deadline (null for a first sample):
    time the event loop could not run, because it was busy or the process was not scheduled."""


@dataclass(frozen=True)
class TableSpec:
    """A stored event table: its model, its Arrow schema, and the column that picks the date."""

    name: str
    model: type[Frozen]
    schema: pa.Schema
    time_column: str

    def partition_date(self, instant: datetime) -> str:
        return instant.strftime("%Y-%m-%d")


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("requests", RequestEvent, arrow_schema(RequestEvent), "started_at"),
        TableSpec("runs", RunEvent, arrow_schema(RunEvent), "at"),
        TableSpec("samples", ResourceSample, arrow_schema(ResourceSample), "at"),
    )
}
