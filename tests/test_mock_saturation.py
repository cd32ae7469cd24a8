"""The saturating mock (`batch_capacity`): token gaps stretch with the batch, a queue forms past
`concurrency_limit`, on the exact clock (autojump) and over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from schemas import MockConfiguration
from stages.mock.http.server import serve
from stages.mock.sim import ConcurrencyGate, MockSimulator, TokenClock
from tests.conftest import CliResult


def _plan(tokens: int, rate: float = 100.0, latency: str = "50ms") -> Any:
    config = MockConfiguration.model_validate(
        {"simulated_latency": latency, "token_generation_rate": rate, "output_tokens": tokens}
    )
    return MockSimulator(config).plan(0, None)


async def _decode(gate: ConcurrencyGate, plan: Any, capacity: int | None) -> list[float]:
    """One request through the gate, as a front end plays it: the times its tokens came."""
    async with gate.slot():
        clock = TokenClock(plan, trio.current_time(), capacity, gate)
        times = []
        for i in range(plan.output_tokens):
            await clock.sleep_until_token(i)
            times.append(trio.current_time())
    return times


async def test_gaps_stretch_by_the_batch_over_capacity(autojump_clock: trio.abc.Clock) -> None:
    plan = _plan(11)  # first token at 50 ms, then one every 10 ms
    for k, capacity, factor in [(1, 2, 1.0), (2, 2, 1.0), (4, 2, 2.0), (8, 2, 4.0), (3, 1, 3.0)]:
        gate = ConcurrencyGate(100)
        found: list[list[float]] = []
        start = trio.current_time()

        async def one(found: list[list[float]], gate: ConcurrencyGate, capacity: int) -> None:
            found.append(await _decode(gate, plan, capacity))

        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(one, found, gate, capacity)
        for times in found:
            assert times[0] - start == pytest.approx(0.050)  # the prefill is not stretched
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert gaps == pytest.approx([0.010 * factor] * 10), (k, capacity)


async def test_unsaturated_clock_is_the_plan(autojump_clock: trio.abc.Clock) -> None:
    plan = _plan(5)
    gate = ConcurrencyGate(100)
    start = trio.current_time()
    times = await _decode(gate, plan, None)
    assert [t - start for t in times] == pytest.approx(list(plan.token_offsets_s))


async def test_batch_shrinking_speeds_the_rest_up(autojump_clock: trio.abc.Clock) -> None:
    """Two short and one long request, capacity 1: the long one's gaps are 3x while all three
    decode, then 1x once it is alone."""
    gate = ConcurrencyGate(100)
    short, long = _plan(3, latency="45ms"), _plan(8)
    out: dict[str, list[float]] = {}

    async def run(name: str, plan: Any) -> None:
        out[name] = await _decode(gate, plan, 1)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "a", short)
        nursery.start_soon(run, "b", short)
        nursery.start_soon(run, "long", long)
    gaps = [b - a for a, b in zip(out["long"], out["long"][1:], strict=False)]
    # Both shorts finish at 45 + 30 + 30 ms; the long one's third gap starts at 110 ms, alone.
    assert out["a"][-1] - start == pytest.approx(0.105)
    assert gaps == pytest.approx([0.030, 0.030] + [0.010] * 5)


async def test_queue_past_the_limit_delays_the_first_token(
    autojump_clock: trio.abc.Clock,
) -> None:
    """concurrency_limit 2, four at once: the last two wait a whole response for a slot."""
    gate = ConcurrencyGate(2)
    plan = _plan(6)  # 50 ms + 5 × 10 ms = 100 ms a response, unsaturated at capacity 2
    out: list[list[float]] = []
    start = trio.current_time()

    async def one() -> None:
        out.append(await _decode(gate, plan, 2))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)
    firsts = sorted(times[0] - start for times in out)
    assert firsts == pytest.approx([0.050, 0.050, 0.150, 0.150])


# -- over HTTP --------------------------------------------------------------------------------


@asynccontextmanager
async def running(**knobs: Any) -> AsyncIterator[str]:
    config = MockConfiguration.model_validate(knobs)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, config, "127.0.0.1", 0))
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def _stream_times(client: httpx.AsyncClient, stream: bool = True) -> tuple[float, float]:
    """(time to the first body chunk, time to the end) of one chat request, in seconds."""
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 30,
        "stream": stream,
    }
    start = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            if first is None and b"content" in chunk:
                first = time.perf_counter() - start
    end = time.perf_counter() - start
    return (first if first is not None else end), end


async def _concurrent(base: str, k: int, stream: bool = True) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=k + 1)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one() -> None:
            out.append(await _stream_times(client, stream))

        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(one)
    return out


@pytest.mark.parametrize("stream", [True, False])
async def test_server_decode_slows_with_the_batch(stream: bool) -> None:
    """30 tokens at 200/s: 145 ms of decode alone; 8 at once over a capacity of 2: ~4x."""
    knobs = {"simulated_latency": "10ms", "token_generation_rate": 200, "batch_capacity": 2}
    async with running(**knobs) as base:
        alone = await _concurrent(base, 1, stream)
        loaded = await _concurrent(base, 8, stream)
    decode_alone = alone[0][1] - 0.010
    decode_loaded = sum(end for _, end in loaded) / len(loaded) - 0.010
    assert 0.13 < decode_alone < 0.25
    assert 2.8 < decode_loaded / decode_alone < 5.0


async def test_server_without_capacity_does_not_slow() -> None:
    knobs = {"simulated_latency": "10ms", "token_generation_rate": 200}
    async with running(**knobs) as base:
        loaded = await _concurrent(base, 8)
    assert max(end for _, end in loaded) < 0.30


async def test_server_queue_shows_in_ttft() -> None:
    """concurrency_limit 2, four at once: two get their first token at ~10 ms, two only after a
    whole response (~155 ms), as a client measures TTFT."""
    knobs = {
        "simulated_latency": "10ms",
        "token_generation_rate": 200,
        "batch_capacity": 2,
        "concurrency_limit": 2,
    }
    async with running(**knobs) as base:
        found = await _concurrent(base, 4)
    firsts = sorted(first for first, _ in found)
    assert firsts[1] < 0.08
    assert firsts[2] > 0.15


def test_mock_server_flag(cli: Any) -> None:
    result: CliResult = cli("mock-server", "--batch-capacity", "0", "--port", "0")
    assert result.code == 2
    assert "mock-server: --batch-capacity: Input should be greater than or equal to 1" in (
        result.err
    )
