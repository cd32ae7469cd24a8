"""The in-process `mock` provider: the shared simulation replayed on this process's clock.

No sockets: a request is a `ResponsePlan` from `MockSimulator`, paced by absolute deadlines
(`trio.sleep_until(t0 + offset)`) so a loaded event loop does not make it drift, and timed by the
same `perf_counter_ns` stamps as a real response, so the client's own scheduling delay shows up
in the numbers just as it would against a server. While a request is in flight it holds
`memory_usage_simulation` bytes (touched, so the sampled RSS is real). Injected failures become
the same error types an HTTP client would record for them. The plans mix the run's seed with the
mock's own `seed`, so `--seed` moves the injected faults (and reproduces them).
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import ClassVar

import trio

from schemas import MockConfiguration
from stages.execute.client.providers.base import Attempt, ProviderSettings, RequestSpec
from stages.mock.sim import (
    STATUS_ERRORS,
    ConcurrencyGate,
    MockSimulator,
    ResponsePlan,
    hold_memory,
)

__all__ = ["MockProvider"]

_STATUS = {"rate_limit": (429, "rate_limited"), "server_error": (500, "server_error")}
_UNAVAILABLE = (503, "server_error")


class MockProvider:
    """A `Provider` backed by `MockSimulator`; the gate applies the mock's concurrency limit."""

    kind: ClassVar[str] = "mock"

    def __init__(self, settings: ProviderSettings) -> None:
        self.config = settings.target.mock or MockConfiguration()
        self.simulator = MockSimulator(self.config, settings.run_seed)
        self.gate = ConcurrencyGate.from_config(self.config)

    async def send(self, spec: RequestSpec, attempt: Attempt) -> None:
        text = spec.full_text
        plan = self.simulator.plan(spec.request_index, spec.max_tokens, text)
        attempt.bytes_sent = len(text.encode())
        attempt.start_ns = perf_counter_ns()
        try:
            async with self.gate.slot() as admitted:
                if not admitted:
                    attempt.http_status = 429
                    attempt.retry_after_s = self.config.retry_after.total_seconds()
                    attempt.fail("rate_limited", "HTTP 429: mock concurrency limit reached")
                    return
                with hold_memory(self.config.memory_usage_simulation or 0):
                    await self._respond(spec, plan, attempt)
        finally:
            if not attempt.end_ns:
                attempt.end_ns = perf_counter_ns()

    async def _respond(self, spec: RequestSpec, plan: ResponsePlan, attempt: Attempt) -> None:
        plan_error = plan.error
        t0 = trio.current_time()
        if plan_error in STATUS_ERRORS:
            status, error_type = _STATUS.get(plan_error, _UNAVAILABLE)
            attempt.http_status = status
            attempt.retry_after_s = plan.retry_after_s
            attempt.fail(error_type, f"HTTP {status}: mock injected {plan_error}")
            return
        if plan_error == "hang":  # nothing at all arrives, not even headers
            await trio.sleep_until(t0 + plan.ttft_s)
            attempt.fail("connection", "mock: connection dropped after a hang")
            return
        attempt.http_status = 200
        stop_at = plan.cut_after if plan_error in ("cut", "malformed") else None
        chunks = attempt.chunk_ns
        texts = plan.text_tokens
        sent = 0
        clock = self.gate.clock(plan, t0, self.config.batch_capacity)
        if spec.stream:
            for i in range(len(plan.token_offsets_s)):
                await clock.sleep_until_token(i)
                if i == stop_at:
                    break
                chunks.append(perf_counter_ns())
                attempt.text_chars += len(texts[i])
                sent += 1
        else:
            await clock.sleep_until_done()
            if stop_at is None:
                chunks.append(perf_counter_ns())
                attempt.text_chars = sum(len(t) for t in texts)
                sent = plan.output_tokens
        attempt.end_ns = perf_counter_ns()
        attempt.bytes_received = attempt.text_chars
        if spec.tools and sent and spec.tool_choice != "none":
            attempt.tool_calls = 1  # offered a tool, the mock answers with one call (as its server)
        if plan_error == "cut":
            attempt.fail("protocol", f"mock: stream cut after {sent} tokens")
        elif plan_error == "malformed":
            attempt.fail("protocol", f"mock: malformed chunk after {sent} tokens")
        else:
            attempt.set_usage(plan.input_tokens, sent, None)  # as the mock server reports it

    async def aclose(self) -> None:
        return None
