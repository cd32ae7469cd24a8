"""The mock's simulation model: deterministic plans, the configured timings, errors and the gate."""

from __future__ import annotations

import itertools
import statistics

import psutil
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import ERROR_KINDS, MockConfiguration
from stages.mock.sim import (
    DEFAULT_MAX_TOKENS,
    STATUS_ERRORS,
    ConcurrencyGate,
    MockSimulator,
    estimate_input_tokens,
    hold_memory,
)


def _sim(**knobs: object) -> MockSimulator:
    return MockSimulator(MockConfiguration.model_validate(knobs))


def test_same_seed_same_plans_whatever_the_order() -> None:
    knobs: dict[str, object] = {"seed": 7, "response_variability": 0.4, "error_injection_rate": 0.3}
    knobs["error_kinds"] = ERROR_KINDS
    forward = [_sim(**knobs).plan(i, 32) for i in range(50)]
    backward_sim = _sim(**knobs)
    backward = [backward_sim.plan(i, 32) for i in reversed(range(50))][::-1]
    assert forward == backward
    # asking again (another request with the same index) changes nothing either
    assert backward_sim.plan(3, 32) == forward[3]


def test_another_seed_another_sequence() -> None:
    knobs = {"response_variability": 0.4, "error_injection_rate": 0.3}
    one = [_sim(seed=1, **knobs).plan(i, 16) for i in range(40)]
    two = [_sim(seed=2, **knobs).plan(i, 16) for i in range(40)]
    assert [p.ttft_s for p in one] != [p.ttft_s for p in two]
    assert [p.error for p in one] != [p.error for p in two]


def test_the_run_seed_moves_the_faults_and_reproduces_them() -> None:
    """The in-process provider passes the run's seed: two runs with different seeds fail on
    different requests, the same seed fails on the same ones, and no run seed (the HTTP
    server) keeps the mock's own seed alone."""
    config = MockConfiguration(seed=1, error_injection_rate=0.2)

    def failing(run_seed: int | None) -> list[int]:
        sim = MockSimulator(config, run_seed)
        return [i for i in range(200) if sim.plan(i, 8).error is not None]

    assert failing(5) == failing(5)
    assert failing(5) != failing(6)
    assert failing(None) == [
        i for i in range(200) if _sim(seed=1, error_injection_rate=0.2).plan(i, 8).error
    ]
    assert failing(None) not in (failing(5), failing(6))


def test_without_variability_tokens_are_paced_exactly() -> None:
    plan = _sim(simulated_latency="50ms", token_generation_rate=200, output_tokens=5).plan(0, 64)
    assert plan.error is None
    assert plan.ttft_s == pytest.approx(0.05)
    assert plan.token_offsets_s == pytest.approx([0.05 + i / 200 for i in range(5)])
    assert plan.output_tokens == len(plan.text_tokens) == 5
    assert plan.duration_s == pytest.approx(0.07)


def test_variability_is_the_relative_spread_around_the_configured_mean() -> None:
    sim = _sim(simulated_latency="100ms", token_generation_rate=50, response_variability=0.2)
    plans = [sim.plan(i, 20) for i in range(2000)]
    ttfts = [p.ttft_s for p in plans]
    assert statistics.fmean(ttfts) == pytest.approx(0.1, rel=0.03)
    assert statistics.pstdev(ttfts) / statistics.fmean(ttfts) == pytest.approx(0.2, rel=0.1)
    gaps = [b - a for p in plans[:200] for a, b in itertools.pairwise(p.token_offsets_s)]
    assert statistics.fmean(gaps) == pytest.approx(0.02, rel=0.03)
    assert min(gaps) > 0


def test_error_rate_and_kinds() -> None:
    sim = _sim(error_injection_rate=0.25, error_kinds=("rate_limit", "cut", "hang"), hang="3s")
    plans = [sim.plan(i, 10) for i in range(4000)]
    failed = [p for p in plans if p.error is not None]
    assert len(failed) / len(plans) == pytest.approx(0.25, abs=0.03)
    assert {p.error for p in failed} == {"rate_limit", "cut", "hang"}
    for p in failed:
        if p.error == "rate_limit":
            assert p.retry_after_s == 1.0 and p.token_offsets_s == () and p.output_tokens == 0
        elif p.error == "hang":
            assert p.ttft_s == 3.0 and p.token_offsets_s == ()
        else:
            assert p.cut_after is not None and 0 <= p.cut_after < p.output_tokens == 10


def test_the_error_draw_does_not_move_the_timings() -> None:
    calm = [_sim(seed=3, response_variability=0.3).plan(i, 8) for i in range(30)]
    noisy = [
        _sim(seed=3, response_variability=0.3, error_injection_rate=0.5, error_kinds=["cut"]).plan(
            i, 8
        )
        for i in range(30)
    ]
    assert [p.token_offsets_s for p in calm] == [p.token_offsets_s for p in noisy]


@pytest.mark.parametrize(
    ("configured", "max_tokens", "expected"),
    [(None, 40, 40), (None, None, DEFAULT_MAX_TOKENS), (16, 40, 16), (16, 8, 8), (16, None, 16)],
)
def test_output_length(configured: int | None, max_tokens: int | None, expected: int) -> None:
    plan = _sim(output_tokens=configured).plan(0, max_tokens)
    assert plan.output_tokens == expected == len(plan.token_offsets_s)


def test_status_errors_carry_no_tokens() -> None:
    for kind in sorted(STATUS_ERRORS):
        plan = _sim(error_injection_rate=1.0, error_kinds=[kind]).plan(0, 10)
        assert plan.error == kind and plan.text_tokens == () and plan.duration_s == 0.0


def test_input_tokens() -> None:
    assert estimate_input_tokens("") == 0
    assert estimate_input_tokens("abcd") == 1
    assert estimate_input_tokens("abcde") == 2
    assert _sim().plan(0, 4, "x" * 40).input_tokens == 10


def test_held_memory_shows_in_rss_and_is_given_back() -> None:
    """What `memory_usage_simulation` promises: the process's RSS grows by the held bytes while
    held, whatever the allocator already holds, and shrinks back when the block ends. (glibc
    keeps a freed block below its mmap threshold in the heap and hands it out again, and a
    freed big block raises that threshold: a plain buffer then moves RSS not at all.)"""
    process = psutil.Process()
    for size in (24 << 20, 20 << 20):  # raise the threshold, then leave 20 MiB in the heap
        waste = bytearray(size)
        waste[::4096] = b"\x01" * len(range(0, size, 4096))
        del waste
    before = process.memory_info().rss
    with hold_memory(20 << 20):
        held = process.memory_info().rss
    after = process.memory_info().rss
    assert held - before > 16 << 20
    assert held - after > 16 << 20
    with hold_memory(0):
        assert process.memory_info().rss - before < 8 << 20


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(-(2**70), 2**70),
    index=st.integers(0, 10**9),
    variability=st.floats(0.0, 1.0),
    rate=st.floats(0.5, 5000.0),
    max_tokens=st.integers(1, 300),
)
def test_plans_are_well_formed(
    seed: int, index: int, variability: float, rate: float, max_tokens: int
) -> None:
    sim = _sim(seed=seed, response_variability=variability, token_generation_rate=rate)
    plan = sim.plan(index, max_tokens)
    assert plan == sim.plan(index, max_tokens)
    offsets = plan.token_offsets_s
    assert len(offsets) == plan.output_tokens == max_tokens == len(plan.text_tokens)
    assert offsets[0] == plan.ttft_s >= 0
    assert all(b >= a for a, b in itertools.pairwise(offsets))
    assert "".join(plan.text_tokens).split() == [t.strip() for t in plan.text_tokens]


async def test_gate_queues_past_the_limit(autojump_clock: trio.abc.Clock) -> None:
    gate = ConcurrencyGate(2, "queue")
    peak = 0
    finished: list[float] = []

    async def request() -> None:
        nonlocal peak
        async with gate.slot() as admitted:
            assert admitted
            peak = max(peak, gate.in_flight)
            await trio.sleep(1)
        finished.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(request)
    assert peak == 2
    assert sorted(round(t - start) for t in finished) == [1, 1, 2, 2, 3]
    assert gate.in_flight == 0 and gate.waiting == 0


async def test_gate_rejects_past_the_limit(autojump_clock: trio.abc.Clock) -> None:
    gate = ConcurrencyGate.from_config(MockConfiguration(concurrency_limit=2, overload="reject"))
    outcomes: list[bool] = []

    async def request() -> None:
        async with gate.slot() as admitted:
            outcomes.append(admitted)
            if admitted:
                await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(request)
    assert sorted(outcomes) == [False, False, False, True, True]
    async with gate.slot() as admitted:  # slots come back when requests finish
        assert admitted
