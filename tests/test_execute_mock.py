"""The in-process `mock` provider: same classification as over HTTP, real memory, deterministic."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from stages.execute.runner import ExecuteOptions
from tests._execute_support import config, requests, run, scenario
from tests.test_execute_http import EXPECTED


def mock_target(**knobs: object) -> dict[str, object]:
    base = {"simulated_latency": "5ms", "token_generation_rate": 2000, "seed": 1}
    return {
        "name": "m",
        "provider": "mock",
        "model": "mock-small",
        "mock": {**base, **knobs},
        "request_timeout": "300ms",
    }


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_injected_errors_match_the_http_classification(tmp_path: Path, kind: str) -> None:
    tgt = mock_target(error_injection_rate=1.0, error_kinds=[kind], hang="3s", output_tokens=4)
    scns = [
        scenario(name="a", expected_operations=2),
        scenario(name="b", expected_operations=1, streaming_required=False),
    ]
    loaded = config([tgt], scns, tmp_path)
    await run(loaded, tmp_path / "data", ExecuteOptions(scenarios=("a", "b")))
    status, error_type, http = EXPECTED[kind]
    for row in requests(tmp_path / "data").to_dicts():
        assert (row["status"], row["error_type"]) == (status, error_type), row
        assert row["http_status"] == (http or (503 if kind == "unavailable" else None)), row


async def test_same_seed_same_outcomes_and_ok_rows_are_complete(tmp_path: Path) -> None:
    outcomes = []
    for name in ("x", "y"):
        tgt = mock_target(error_injection_rate=0.3, output_tokens=5, response_variability=0.2)
        loaded = config(
            [tgt],
            [scenario(expected_operations=30, concurrency_level=4, tools_required=True)],
            tmp_path,
        )
        await run(loaded, tmp_path / name)
        frame = requests(tmp_path / name).sort("request_index")
        outcomes.append(frame["error_type"].to_list())
        ok = frame.filter(status="ok")
        assert ok.height > 10 and (ok["output_tokens"] == 5).all() and (ok["tool_calls"] == 1).all()
        assert ok["chunk_offsets_us"].list.len().to_list() == [5] * ok.height
    assert outcomes[0] == outcomes[1] and any(outcomes[0])


async def test_memory_simulation_shows_in_the_samples(tmp_path: Path) -> None:
    before = psutil.Process().memory_info().rss
    tgt = mock_target(
        memory_usage_simulation=32 * 1024 * 1024, simulated_latency="400ms", output_tokens=1
    )
    loaded = config([tgt], [scenario(expected_operations=4, concurrency_level=4)], tmp_path)
    result = await run(loaded, tmp_path / "data")
    assert result.pairs[0].peak_rss_bytes - before > 100 * 1024 * 1024  # 4 × 32 MiB held at once
