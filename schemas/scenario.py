"""What to run: the seed's `BenchmarkScenario` and `MockConfiguration`.

`add_scenario_validator` is the seed's scenario-level custom validation hook: a function that
raises `ValueError` for a scenario it refuses; it runs on every scenario validated afterwards.

Every number has an upper bound, and floats must be finite: what a run plans up front (every
arrival time, every prompt choice, the mock's tokens and held memory) is sized by these fields,
so an unbounded one is a MemoryError or a run that never ends rather than a message naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from schemas._base import Frozen
from schemas._types import (
    Duration,
    NonNegativeDuration,
    SafeName,
    field_error,
    require_unique_names,
)
from schemas.slo import Slo

__all__ = [
    "ERROR_KINDS",
    "OFFERED_TOOL",
    "TOOL_CHOICES",
    "MAX_MOCK_MEMORY",
    "MAX_MOCK_MEMORY_TOTAL",
    "MAX_MOCK_OUTPUT_TOKENS",
    "MAX_PLANNED_REQUESTS",
    "MAX_WARMUP",
    "BenchmarkScenario",
    "MockConfiguration",
    "ScenarioSet",
    "add_scenario_validator",
]

MAX_PLANNED_REQUESTS = 10_000_000
"""Warmup plus measured requests of one scenario (an open loop's: rate × duration arrivals).
The plan holds every arrival time and prompt choice in memory before the first request."""
MAX_WARMUP = 1_000_000
MAX_MOCK_OUTPUT_TOKENS = 100_000
"""The most tokens the mock generates for one response (it plans every token's time)."""
MAX_MOCK_MEMORY = 1 << 30
"""`memory_usage_simulation` per request: at most 1 GiB."""
MAX_MOCK_MEMORY_TOTAL = 4 << 30
"""`memory_usage_simulation × concurrency_limit`: the most the mock holds at once, 4 GiB."""

ScenarioValidator = Callable[["BenchmarkScenario"], None]
_VALIDATORS: list[ScenarioValidator] = []

OFFERED_TOOL = "get_weather"
"""The function tool a scenario with `tools_required` offers (its schema: stages.execute)."""
ToolChoice = Literal["auto", "required", "none", "get_weather"]
"""Whether a model may, must or must not call a tool, or the tool it must call."""
TOOL_CHOICES: tuple[str, ...] = get_args(ToolChoice)

ERROR_KINDS = ("rate_limit", "server_error", "unavailable", "hang", "cut", "malformed")
ErrorKind = Literal["rate_limit", "server_error", "unavailable", "hang", "cut", "malformed"]


def add_scenario_validator(func: ScenarioValidator) -> Callable[[], None]:
    """Register a custom check for every scenario; returns a function that removes it."""
    _VALIDATORS.append(func)
    return lambda: _VALIDATORS.remove(func)


class MockConfiguration(Frozen):
    """The mock provider's knobs (in-process and `pipeline mock-server`)."""

    simulated_latency: NonNegativeDuration = timedelta(milliseconds=50)
    """Delay before the first token."""
    token_generation_rate: float = Field(default=100.0, ge=0.001, le=1e6, allow_inf_nan=False)
    """Tokens per second after the first one (one per 1000 s at the slowest: a response's
    planned times stay finite)."""
    error_injection_rate: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    memory_usage_simulation: int | None = Field(default=None, gt=0, le=MAX_MOCK_MEMORY)
    """Bytes held per request in flight; "must be positive" (the seed's rule): leave it out (None)
    for no simulated memory."""
    concurrency_limit: int = Field(default=100, ge=1, le=10_000)
    response_variability: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """Relative spread of the timings."""
    output_tokens: int | None = Field(default=None, ge=1, le=MAX_MOCK_OUTPUT_TOKENS)
    """Tokens per response; None: the request's max_tokens."""
    seed: int = 0
    """Any integer: mixed into 64 bits (`stages.mock.sim`), and stored only inside the target's JSON."""
    error_kinds: tuple[ErrorKind, ...] = ("rate_limit", "server_error", "unavailable")
    """Which failures `error_injection_rate` draws from, uniformly."""
    overload: Literal["queue", "reject"] = "queue"
    """Past `concurrency_limit`: queue (latency grows) or reject with 429."""
    retry_after: NonNegativeDuration = timedelta(seconds=1)
    hang: NonNegativeDuration = timedelta(seconds=600)
    """How long an injected hang lasts (past any sane client timeout)."""
    mimic: Literal["openai", "llama.cpp", "llama-cpp-python"] = "openai"
    """Whose wire quirks the mock server reproduces on its OpenAI endpoint (docs/mock.md):
    "llama.cpp" promises keep-alive and closes the connection after every stream, and streams
    a tool call's name before its arguments; "llama-cpp-python" sends no usage in streams and
    ignores `max_completion_tokens` (it reads only `max_tokens`)."""
    batch_capacity: int | None = Field(default=None, ge=1, le=10_000)
    """The saturating mode (docs/mock.md): requests being served share one decode budget, as in
    a continuous-batching server. With k of them in flight, every gap between tokens is
    stretched by max(1, k / batch_capacity). None: each request decodes at full speed."""

    @field_validator("error_kinds")
    @classmethod
    def _some_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one error kind is needed")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _memory_total(self) -> MockConfiguration:
        total = (self.memory_usage_simulation or 0) * self.concurrency_limit
        if total > MAX_MOCK_MEMORY_TOTAL:
            raise field_error(
                "MockConfiguration",
                "memory_usage_simulation",
                f"memory_usage_simulation × concurrency_limit is {total:,} bytes, over the "
                f"{MAX_MOCK_MEMORY_TOTAL >> 30} GiB the mock may hold at once: lower either",
                self.memory_usage_simulation,
            )
        return self


class BenchmarkScenario(Frozen):
    """A workload: prompts, how many requests, how concurrent, and what it requires."""

    name: SafeName
    description: str = ""
    test_prompts: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    prompts_file: str | None = None
    """JSONL file of prompts ({"prompt": "..."} or a string per line), relative to the config."""
    expected_operations: int = Field(default=10, ge=1, le=10_000_000)
    concurrency_level: int = Field(default=1, ge=1, le=100)
    timeout_duration: Duration = timedelta(seconds=120)
    tools_required: bool = False
    streaming_required: bool = False
    max_tokens: int = Field(default=64, ge=1, le=1_000_000)
    warmup: int = Field(default=0, ge=0, le=MAX_WARMUP)
    """Requests sent first, recorded with warmup=true, excluded from every result."""
    rate: float | None = Field(default=None, ge=1e-6, le=1e6, allow_inf_nan=False)
    """Open loop: requests per second (None: closed loop at `concurrency_level`)."""
    arrival: Literal["constant", "poisson"] = "poisson"
    ramp_up: NonNegativeDuration = timedelta(0)
    duration: Duration | None = None
    """Open loop: stop scheduling after this long (else after `expected_operations`)."""
    system_prompt: str | None = None
    tags: tuple[str, ...] = ()
    tool_choice: ToolChoice | None = None
    """With `tools_required`: whether the model may ("auto"), must ("required") or must not
    ("none") call a tool, or must call the offered `get_weather`. None: the provider's default
    (auto). Forcing a call is how to see tool calls from a model that would rather not."""
    slo: Slo | None = None
    """The service-level objective `aggregate` judges this scenario's attempts by (README, "SLOs
    and goodput"); `--slo` on `aggregate`/`run` overrides it."""

    @model_validator(mode="after")
    def _prompts_and_hooks(self) -> BenchmarkScenario:
        if not self.test_prompts and not self.prompts_file:
            raise ValueError("test_prompts: at least one prompt is needed (or a prompts_file)")
        if self.tool_choice is not None and not self.tools_required:
            raise ValueError("tool_choice needs tools_required = true (no tool is offered)")
        self._check_planned()
        for check in list(_VALIDATORS):
            check(self)
        return self

    def _check_planned(self) -> None:
        """Refuse a plan too large to hold: warmup + measured requests over MAX_PLANNED_REQUESTS."""
        limit = f"{MAX_PLANNED_REQUESTS:,}"
        if self.rate is not None and self.duration is not None:
            arrivals = self.rate * self.duration.total_seconds()
            if self.warmup + arrivals > MAX_PLANNED_REQUESTS:
                warmup = f" (and {self.warmup:,} warmup)" if self.warmup else ""
                raise field_error(
                    "BenchmarkScenario",
                    "duration",
                    f"rate × duration plans {arrivals:,.0f} arrivals{warmup}, over the "
                    f"{limit} requests a run may plan: lower rate or duration",
                    self.duration.total_seconds(),
                )
        elif self.warmup + self.expected_operations > MAX_PLANNED_REQUESTS:
            raise field_error(
                "BenchmarkScenario",
                "warmup",
                f"warmup + expected_operations is {self.warmup + self.expected_operations:,}, "
                f"over the {limit} requests a run may plan",
                self.warmup,
            )


class ScenarioSet(Frozen):
    """A set of scenarios whose names are unique."""

    scenarios: list[BenchmarkScenario]

    @field_validator("scenarios")
    @classmethod
    def _unique(cls, value: list[BenchmarkScenario]) -> list[BenchmarkScenario]:
        require_unique_names([s.name for s in value], "scenario")
        return value
