"""Against llama.cpp's own server (C++), not our mock: the optional `real_server` tests.

They need the binary and the tiny model that ../shared/real-server/real_server.sh builds (about
30 minutes, once per machine); without them they skip, so CI never builds them. What they pin is
pinned in CI by the mock's `mimic = "llama.cpp"` mode (tests/test_execute_http.py).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from stages.execute.load.plan import ExecuteOptions
from tests._execute_support import config, requests, run, scenario
from tests.real_server import LLAMA_SERVER, MODEL, llama_server

pytestmark = [
    pytest.mark.real_server,
    pytest.mark.skipif(
        not (LLAMA_SERVER.is_file() and MODEL.is_file()),
        reason=f"no llama-server at {LLAMA_SERVER} (build it: ../shared/real-server/real_server.sh install)",
    ),
]


@pytest.mark.parametrize("concurrency", [1, 4, 8])
async def test_no_false_errors_at_any_concurrency(tmp_path: Path, concurrency: int) -> None:
    """llama-server closes its connection after every stream: 120 streamed requests must all
    succeed (before the resend on a closed keep-alive connection, 28 of 240 failed at 1)."""
    with llama_server(tmp_path / "llama.log") as base:
        target = {"name": "llama", "provider": "openai-compatible", "model": "tiny"}
        loaded = config(
            [{**target, "base_url": f"{base}/v1"}],
            [scenario(expected_operations=120, concurrency_level=concurrency, max_tokens=16)],
            tmp_path,
        )
        result = await run(loaded, tmp_path / "data", ExecuteOptions(seed=1))
    frame = requests(tmp_path / "data")
    assert result.status == "completed" and frame.height == 120
    assert frame.filter(pl.col("status") != "ok").height == 0
    assert set(frame["output_tokens"]) == {16} and set(frame["token_source"]) == {"server"}


async def test_the_anthropic_endpoint_of_llama_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_KEY", "unused")
    with llama_server(tmp_path / "llama.log") as base:
        target = {"name": "llama", "provider": "anthropic", "model": "tiny", "base_url": base}
        loaded = config(
            [{**target, "api_key_env": "LLAMA_KEY"}],
            [scenario(expected_operations=20, concurrency_level=2, max_tokens=8)],
            tmp_path,
        )
        await run(loaded, tmp_path / "data")
    frame = requests(tmp_path / "data")
    assert set(frame["status"]) == {"ok"} and set(frame["output_tokens"]) == {8}
