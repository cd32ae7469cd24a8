"""A writer process for crash and concurrency tests: appends numbered batches, says when each is published.

Usage: python -m tests.writer_proc DATA_DIR RUN_ID WRITER BATCHES BATCH_SIZE
Prints "published <batch>" after each batch is durable, so a test knows what must be replayable.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from pipeline.store.eventlog import EventLog
from schemas import event_id


def batch(run_id: str, writer: str, number: int, size: int) -> dict[str, list[object]]:
    start = datetime(2026, 1, 2, tzinfo=UTC) + timedelta(seconds=number)
    ids = [f"{writer}-{number}-{i}" for i in range(size)]
    return {
        "event_id": [event_id(run_id, x) for x in ids],
        "schema_version": [1] * size,
        "run_id": [run_id] * size,
        "scenario": ["s"] * size,
        "target": [writer] * size,
        "provider": ["mock"] * size,
        "model": ["m"] * size,
        "worker": [0] * size,
        "request_index": [number * size + i for i in range(size)],
        "prompt_index": [0] * size,
        "attempt": [1] * size,
        "warmup": [False] * size,
        "streaming": [True] * size,
        "scheduled_at": [start] * size,
        "started_at": [start] * size,
        "queue_us": [0] * size,
        "chunk_offsets_us": [list(range(50)) for _ in range(size)],
        "status": ["ok"] * size,
        "bytes_sent": [100] * size,
        "bytes_received": [1000] * size,
        "tool_calls": [0] * size,
        "error_message": ["x" * 200] * size,
    }


def main() -> None:
    data_dir, run_id, writer, batches, size = sys.argv[1:6]
    out = EventLog(data_dir).writer(run_id, writer)
    for number in range(int(batches)):
        out.append("requests", batch(run_id, writer, number, int(size)))
        sys.stdout.write(f"published {number}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
