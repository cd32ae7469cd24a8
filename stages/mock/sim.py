"""The mock's one simulation model, shared by the in-process provider and the HTTP mock server.

Both front ends must agree on what request N looks like, or a benchmark against `pipeline
mock-server` and one against the in-process `mock` provider would measure different things. So
every decision (when the first token comes, when each later token comes, whether and how the
request fails, what text it carries) is made here, up front, as a `ResponsePlan`. A front end only
replays the plan against its own clock, by absolute deadlines (`t0 + offset`), which is what keeps
a loaded mock from drifting.

Determinism: request N's plan comes from its own RNG, seeded by mixing (seed, N) without
`hash()`, so it does not depend on the order in which concurrent requests ask for their plans, on
`PYTHONHASHSEED` or on the process. The same seed gives the same sequence; another seed, another.
The in-process provider mixes the run's seed (`execute --seed`) into the mock's own `seed` first,
so that a run's seed decides which requests fail as it decides the prompts and arrivals; the HTTP
server has no run seed and uses its `seed` knob alone.

Saturation (`batch_capacity`, docs/mock.md): a continuous-batching server (vLLM, TGI, SGLang)
decodes every running request in one step per token, and a step takes longer once the batch
outgrows what the hardware does in parallel. So with `batch_capacity` N and k requests being
served, each gap between tokens is the plan's gap × max(1, k / N), k read when the gap starts
(`TokenClock`). The plan stays the unloaded one; only its replay stretches. Past
`concurrency_limit` requests wait for a slot (`ConcurrencyGate`), and the first token's clock
starts once admitted, so a client's TTFT includes the wait.

Variability: `response_variability` is the coefficient of variation of the first-token delay and
of every inter-token gap. The multipliers are log-normal with mean 1, so timings stay positive and
their mean stays the configured one whatever the spread.
"""

from __future__ import annotations

import math
import mmap
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Literal

import trio

from schemas.scenario import MAX_MOCK_OUTPUT_TOKENS, MockConfiguration

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "STATUS_ERRORS",
    "ConcurrencyGate",
    "MockSimulator",
    "ResponsePlan",
    "TokenClock",
    "estimate_input_tokens",
    "hold_memory",
]

DEFAULT_MAX_TOKENS = 16
"""Output length when neither the config nor the request says how long a response is."""

STATUS_ERRORS = frozenset({"rate_limit", "server_error", "unavailable"})
"""Error kinds answered with an HTTP status at once, before any token: they carry no timings."""

_MASK64 = (1 << 64) - 1
_PAGE = 4096

# A fixed vocabulary keeps the text deterministic and cheap: a plan picks a start and a stride.
_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars drift across "
    "an open sky and distant rivers carry quiet stories toward the patient sea where "
    "old ships rest beside warm harbours full of light music and gentle evening rain"
).split()


_STRIDES = (1, 3, 7, 11, 13)


def _mix(seed: int, index: int) -> int:
    """A splitmix64 finaliser over (seed, index): neighbouring requests get unrelated streams."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def estimate_input_tokens(text: str) -> int:
    """The mock's token count of a prompt: about four characters a token, at least one if any text.

    Real tokenizers differ per model; the mock only needs a count that grows with the prompt and
    that both front ends report identically as `usage`. (It is the mock's tokenizer, not the
    client's estimate: the mock depends on nothing of the client.)
    """
    return (len(text) + 3) // 4


@contextmanager
def hold_memory(nbytes: int) -> Iterator[None]:
    """Hold `nbytes` of fresh memory for the block, every page touched, so it really counts in
    the process's RSS (`memory_usage_simulation`), and give it back to the OS when it ends.

    An anonymous mapping, not a bytearray: the allocator may serve a bytearray from memory the
    process already holds (a freed big block stays in its heap), and RSS would not move; a
    mapping is new pages every time, returned at once on close.
    """
    if nbytes <= 0:
        yield
        return
    block = mmap.mmap(-1, nbytes)
    try:
        for offset in range(0, nbytes, _PAGE):
            block[offset] = 1
        yield
    finally:
        block.close()


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """Everything about one mock response, decided before it starts; offsets in seconds from t0.

    - ok: `error` is None; token i is due at `token_offsets_s[i]` (the first at `ttft_s`).
    - "rate_limit", "server_error", "unavailable": answered at once with a status (429 carrying
      `retry_after_s`, 500, 503/529); no tokens, `output_tokens` 0, offsets empty.
    - "hang": nothing is sent for `ttft_s` seconds (the configured `hang`), then the connection
      is dropped; no tokens.
    - "cut": tokens `0 .. cut_after-1` are sent on time, then at `token_offsets_s[cut_after]` the
      stream stops without its end (the connection is closed).
    - "malformed": token `cut_after` is sent as a chunk that is not valid JSON; the rest as usual.
    """

    ttft_s: float
    token_offsets_s: tuple[float, ...]
    output_tokens: int
    error: str | None
    cut_after: int | None
    retry_after_s: float | None
    text_tokens: tuple[str, ...]
    input_tokens: int = 0
    """`estimate_input_tokens(prompt)`."""

    @property
    def duration_s(self) -> float:
        """When the response is complete (the last token's offset, or the hang/ttft if none)."""
        return self.token_offsets_s[-1] if self.token_offsets_s else self.ttft_s


class MockSimulator:
    """Turns a `MockConfiguration` into one deterministic `ResponsePlan` per request index."""

    __slots__ = (
        "_error_kinds",
        "_error_rate",
        "_gap_s",
        "_hang_s",
        "_output_tokens",
        "_retry_after_s",
        "_seed",
        "_sigma",
        "_ttft_s",
        "config",
    )

    def __init__(self, config: MockConfiguration, run_seed: int | None = None) -> None:
        """`run_seed`: the run's seed, mixed with the mock's own `seed` (None: `seed` alone).

        Without it every run of a target would fail on the same request indexes, whatever its
        `--seed`, so runs would not be independent samples of the injected fault rate (and a
        fault on index 3 would show up in every run's history as if it were the target's).
        """
        self.config = config
        self._seed = config.seed if run_seed is None else _mix(config.seed, run_seed)
        self._ttft_s = config.simulated_latency.total_seconds()
        self._gap_s = 1.0 / config.token_generation_rate
        self._error_rate = config.error_injection_rate
        self._error_kinds: tuple[str, ...] = tuple(config.error_kinds)
        self._output_tokens = config.output_tokens
        self._retry_after_s = config.retry_after.total_seconds()
        self._hang_s = config.hang.total_seconds()
        v = config.response_variability
        # Log-normal with mean 1 and coefficient of variation v: sigma^2 = ln(1 + v^2).
        self._sigma = math.sqrt(math.log1p(v * v)) if v > 0 else 0.0

    def output_length(self, max_tokens: int | None) -> int:
        """Tokens in a response: the configured length, capped by the request's max_tokens, and
        never more than MAX_MOCK_OUTPUT_TOKENS (every token's time is planned up front; the
        server refuses a larger max_tokens, the in-process provider stops there)."""
        if self._output_tokens is None:
            wanted = max(1, max_tokens) if max_tokens is not None else DEFAULT_MAX_TOKENS
        elif max_tokens is None:
            wanted = self._output_tokens
        else:
            wanted = max(1, min(self._output_tokens, max_tokens))
        return min(wanted, MAX_MOCK_OUTPUT_TOKENS)

    def plan(self, request_index: int, max_tokens: int | None, prompt: str = "") -> ResponsePlan:
        """The plan of request `request_index`; a pure function of (config, index, max_tokens).

        The prompt only sets `input_tokens`; it never changes timings or errors.
        """
        rng = random.Random(_mix(self._seed, request_index))
        # The draws happen in a fixed order, each taking exactly one `random()` (never `choice` or
        # `randrange`, whose consumption varies), so one part of a plan stays put when another
        # part's knob changes: e.g. turning on errors does not shift the timings.
        draw = rng.random
        failed = draw() < self._error_rate
        kinds = self._error_kinds
        kind = kinds[int(draw() * len(kinds))]
        error = kind if failed else None
        sigma = self._sigma
        half_var = sigma * sigma / 2.0
        ttft = self._ttft_s * (math.exp(rng.gauss(0.0, sigma) - half_var) if sigma else 1.0)
        input_tokens = estimate_input_tokens(prompt)

        if error in STATUS_ERRORS:
            retry = self._retry_after_s if error == "rate_limit" else None
            return ResponsePlan(0.0, (), 0, error, None, retry, (), input_tokens)
        if error == "hang":
            return ResponsePlan(self._hang_s, (), 0, error, None, None, (), input_tokens)

        n = self.output_length(max_tokens)
        gap = self._gap_s
        offsets = [ttft] * n
        t = ttft
        if sigma:
            gauss, exp = rng.gauss, math.exp
            for i in range(1, n):
                t += gap * exp(gauss(0.0, sigma) - half_var)
                offsets[i] = t
        else:
            for i in range(1, n):
                offsets[i] = ttft + i * gap
        cut_at = int(draw() * n)
        cut_after = cut_at if error is not None else None

        words = _WORDS
        size = len(words)
        start = int(draw() * size)
        stride = _STRIDES[int(draw() * len(_STRIDES))]
        text = tuple(
            (
                words[(start + i * stride) % size]
                if i == 0
                else " " + words[(start + i * stride) % size]
            )
            for i in range(n)
        )
        return ResponsePlan(ttft, tuple(offsets), n, error, cut_after, None, text, input_tokens)


class ConcurrencyGate:
    """The mock's concurrency limit, shared by the server and the in-process provider.

    Past `limit` requests in flight a request either waits its turn in FIFO order ("queue": the
    latency a client sees grows like a saturated server's) or is turned away at once ("reject":
    the front end answers 429).
    """

    __slots__ = ("_limiter", "limit", "overload")

    def __init__(self, limit: int, overload: Literal["queue", "reject"] = "queue") -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.limit = limit
        self.overload = overload
        self._limiter = trio.CapacityLimiter(limit)

    @classmethod
    def from_config(cls, config: MockConfiguration) -> ConcurrencyGate:
        return cls(config.concurrency_limit, config.overload)

    def clock(self, plan: ResponsePlan, t0: float, capacity: int | None) -> TokenClock:
        """A `TokenClock` for `plan` from `t0`, saturating with this gate's in-flight count."""
        return TokenClock(plan, t0, capacity, self)

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now."""
        return int(self._limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now (always 0 when rejecting)."""
        return self._limiter.statistics().tasks_waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """Hold a slot for the body of the block; yields False when the request is rejected."""
        token = object()
        if self.overload == "reject":
            try:
                self._limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                yield False
                return
        else:
            await self._limiter.acquire_on_behalf_of(token)
        try:
            yield True
        finally:
            self._limiter.release_on_behalf_of(token)


class TokenClock:
    """When each token of a plan is due, on trio's clock, for a front end replaying it.

    Unsaturated (`capacity` None) token i is due at `t0 + offset_i`: absolute deadlines, so a
    loaded event loop does not drift. Saturated, gap i (from token i-1 to token i) is the plan's
    gap × max(1, k / capacity), k = `gate.in_flight` when the gap starts (the moment `due(i)` is
    first asked, right after token i-1 was due). Deadlines are still absolute sums, so lateness
    in the loop does not accumulate; only the batch size moves them. The first token (the
    prefill) is not stretched: under load it is the queue for a slot that delays it.
    """

    __slots__ = ("_capacity", "_due", "_end", "_gate", "_offsets", "_t0")

    def __init__(
        self,
        plan: ResponsePlan,
        t0: float,
        capacity: int | None = None,
        gate: ConcurrencyGate | None = None,
    ) -> None:
        if capacity is not None and gate is None:
            raise ValueError("a batch capacity needs the gate that counts requests in flight")
        self._offsets = plan.token_offsets_s
        self._end = plan.duration_s
        self._t0 = t0
        self._capacity = capacity
        self._gate = gate
        self._due: list[float] = []

    def stretch(self) -> float:
        """The factor a gap starting now is stretched by: max(1, in flight / capacity)."""
        if self._capacity is None or self._gate is None:
            return 1.0
        return max(1.0, self._gate.in_flight / self._capacity)

    def due(self, i: int) -> float:
        """Token i's deadline; asked in order (0, 1, 2, ...), each at most once before the next."""
        offsets = self._offsets
        if self._capacity is None:
            return self._t0 + offsets[i]
        due = self._due
        while len(due) <= i:
            n = len(due)
            if n == 0:
                due.append(self._t0 + offsets[0])
            else:
                due.append(due[-1] + (offsets[n] - offsets[n - 1]) * self.stretch())
        return due[i]

    async def sleep_until_token(self, i: int) -> None:
        """Sleep until token i is due. Saturated, the gaps before it are slept one by one (the
        batch may grow or shrink meanwhile), as a server decoding a non-streamed answer would."""
        if self._capacity is not None:
            for j in range(len(self._due), i):
                await trio.sleep_until(self.due(j))
        await trio.sleep_until(self.due(i))

    async def sleep_until_done(self) -> None:
        """Sleep until the last token is due (a plan without tokens: its `duration_s`)."""
        if self._offsets:
            await self.sleep_until_token(len(self._offsets) - 1)
        else:
            await trio.sleep_until(self._t0 + self._end)
