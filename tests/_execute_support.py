"""Helpers shared by the execute tests: configs in a few lines, a run inside the test's trio loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import trio

from pipeline.config import LoadedConfig, parse_config
from pipeline.store.eventlog import EventLog
from schemas import MockConfiguration
from stages.execute.load.plan import ExecuteOptions, new_run_id, prepare
from stages.execute.session import ExecuteResult, run_prepared
from stages.mock.http.server import serve


def scenario(**fields: Any) -> dict[str, Any]:
    return {
        "name": "s",
        "test_prompts": ["Say hi."],
        "expected_operations": 3,
        "concurrency_level": 1,
        "streaming_required": True,
        "max_tokens": 8,
        "timeout_duration": "30s",
        **fields,
    }


def target(**fields: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "provider": "openai",
        "model": "m",
        "api_key_env": "EXEC_TEST_KEY",
        **fields,
    }


def config(
    targets: list[dict[str, Any]], scenarios: list[dict[str, Any]], base: Path
) -> LoadedConfig:
    return parse_config(
        {"targets": targets, "scenarios": scenarios, "default_scenarios": [scenarios[0]["name"]]},
        "test",
        base,
    )


async def run(
    loaded: LoadedConfig, data_dir: Path, options: ExecuteOptions | None = None
) -> ExecuteResult:
    """Run inside the current trio loop, as `pipeline execute` runs (real sockets, workers as
    planned), but without taking over the process's signals."""
    runs, seed = prepare(loaded, options or ExecuteOptions())
    return await run_prepared(runs, data_dir, new_run_id(), seed, handle_signals=False)


def requests(data_dir: Path) -> pl.DataFrame:
    return EventLog(data_dir).replay("requests").collect().sort("request_index", "attempt")


def runs(data_dir: Path) -> pl.DataFrame:
    return EventLog(data_dir).replay("runs").collect()


@asynccontextmanager
async def mock_server(**knobs: Any) -> AsyncIterator[str]:
    """The project's mock server on 127.0.0.1 (a free port) in this loop; yields its base URL."""
    mock = MockConfiguration.model_validate(
        {"simulated_latency": "5ms", "token_generation_rate": 2000, **knobs}
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, mock, "127.0.0.1", 0))
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


def sse(*events: Any, done: bool = True) -> bytes:
    """An SSE body: each event a JSON object (or raw bytes), then [DONE]."""
    import json

    out = b""
    for event in events:
        data = event if isinstance(event, bytes) else json.dumps(event).encode()
        out += b"data: " + data + b"\n\n"
    if done:
        out += b"data: [DONE]\n\n"
    return out


def openai_chunk(content: str | None = None, **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta}],
    }


OPENAI_USAGE = {
    "id": "c1",
    "choices": [],
    "usage": {
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}
