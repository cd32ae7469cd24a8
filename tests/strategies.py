"""Hypothesis strategies for the event models, and turning models into Arrow batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import strategies as st

from schemas import TABLES, RequestEvent, ResourceSample, RunEvent, event_id

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True)
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 4), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond))
small = st.integers(min_value=0, max_value=10**9)
maybe_small = st.none() | small
text = st.text(max_size=40)


@st.composite
def request_events(draw: st.DrawFn, run_id: str | None = None) -> RequestEvent:
    run = run_id or draw(names)
    index = draw(st.integers(0, 10**6))
    attempt = draw(st.integers(1, 3))
    started = draw(instants)
    status = draw(st.sampled_from(["ok", "error", "timeout", "cancelled"]))
    return RequestEvent(
        event_id=event_id(run, "s", "t", index, attempt, draw(st.integers(0, 10**9))),
        run_id=run,
        scenario=draw(names),
        target=draw(names),
        provider=draw(st.sampled_from(["openai", "anthropic", "ollama", "mock"])),
        model=draw(text),
        worker=draw(st.integers(0, 8)),
        request_index=index,
        prompt_index=draw(st.integers(0, 50)),
        attempt=attempt,
        warmup=draw(st.booleans()),
        streaming=draw(st.booleans()),
        scheduled_at=started - timedelta(microseconds=draw(st.integers(0, 10**6))),
        started_at=started,
        queue_us=draw(small),
        ttft_us=draw(maybe_small),
        latency_us=draw(maybe_small),
        chunk_offsets_us=draw(st.lists(small, max_size=8)),
        input_tokens=draw(maybe_small),
        output_tokens=draw(maybe_small),
        cached_tokens=draw(maybe_small),
        token_source=draw(st.sampled_from([None, "server", "estimated"])),
        status=status,
        http_status=draw(st.none() | st.integers(100, 599)),
        error_type=None
        if status == "ok"
        else draw(st.sampled_from(["timeout", "protocol", "rate_limited"])),
        error_message=draw(st.none() | text),
        bytes_sent=draw(small),
        bytes_received=draw(small),
        tool_calls=draw(st.integers(0, 4)),
        server_request_id=draw(st.none() | text),
    )


@st.composite
def run_events(draw: st.DrawFn) -> RunEvent:
    run = draw(names)
    kind = draw(st.sampled_from(["started", "finished"]))
    return RunEvent(
        event_id=event_id(run, kind),
        run_id=run,
        scenario=draw(names),
        target=draw(names),
        provider="mock",
        model=draw(text),
        kind=kind,
        at=draw(instants),
        status=draw(
            st.sampled_from(["running", "completed", "interrupted", "failed", "timed_out"])
        ),
        mode=draw(st.sampled_from(["closed", "open"])),
        concurrency=draw(st.integers(1, 100)),
        planned_requests=draw(maybe_small),
        rate=draw(st.none() | st.floats(0.1, 1000)),
        seed=draw(st.none() | st.integers(0, 2**31)),
        config_hash=draw(text),
        scenario_config=draw(text),
        target_config=draw(text),
        python="3.11",
        os="Linux",
        arch="x86_64",
        cpus=2,
        memory_bytes=draw(small),
        requests_sent=draw(maybe_small),
        message=draw(st.none() | text),
    )


@st.composite
def resource_samples(draw: st.DrawFn) -> ResourceSample:
    run = draw(names)
    seq = draw(st.integers(0, 10**6))
    return ResourceSample(
        event_id=event_id(run, "sample", seq),
        run_id=run,
        worker=draw(st.integers(0, 8)),
        scenario=draw(st.none() | names),
        target=draw(st.none() | names),
        at=draw(instants),
        offset_us=draw(small),
        rss_bytes=draw(small),
        cpu_user_us=draw(small),
        cpu_system_us=draw(small),
        in_flight=draw(st.integers(0, 100)),
    )


def to_batch(table: str, events: Sequence[object]) -> pa.Table:
    """Models → an Arrow table with the stored schema (the path `execute` takes, as columns)."""
    rows = [e.model_dump() for e in events]  # type: ignore[attr-defined]
    return pa.Table.from_pylist(rows, schema=TABLES[table].schema)
