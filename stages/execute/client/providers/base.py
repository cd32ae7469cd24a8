"""What every provider client shares: the request it is asked to send, and the attempt it fills.

`Attempt` is the one mutable object on the hot path: a provider appends a timestamp per content
chunk and sets a handful of fields; nothing else is allocated per chunk. The runner turns a
finished attempt into one row of the `requests` table. A provider never raises for a provider
failure (a 429, a timeout, a cut stream): it calls `Attempt.fail`, and the failure is data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas import TargetConfig
from schemas.config import is_sensitive_header
from schemas.scenario import OFFERED_TOOL
from stages.execute.client.taxonomy import ProtocolViolation, scrub, status_for_error
from stages.execute.client.tokens import CALIBRATED, CHARS, CHUNKS, SERVER, estimate_tokens

__all__ = [
    "MAX_TOKEN_COUNT",
    "WEATHER_TOOL",
    "Attempt",
    "Provider",
    "ProtocolViolation",
    "ProviderSettings",
    "RequestSpec",
    "token_count",
]

MAX_TOKEN_COUNT = 1 << 40
"""No request has a trillion tokens: a count above this is a server's garbage, not usage."""


def token_count(value: Any, name: str) -> int | None:
    """A usage count as the server sent it: None when absent, else a whole number in
    0..MAX_TOKEN_COUNT; anything else (a string, a negative, 1e30, inf) is a violation."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        raise ProtocolViolation(f"usage field {name} is not a token count: {value!r:.40}")
    return value


WEATHER_TOOL: dict[str, Any] = {
    "name": OFFERED_TOOL,
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}
"""The tool offered when a scenario has `tools_required`; each provider wraps it in its own shape."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send: what the scenario asks, independent of the wire format."""

    prompt: str
    max_tokens: int
    stream: bool
    tools: bool = False
    system_prompt: str | None = None
    request_index: int = 0
    """The mock derives its deterministic plan from it; HTTP providers ignore it."""
    tool_choice: str | None = None
    """The scenario's `tool_choice` (auto | required | none | the tool's name), or None."""
    calibrated_input: int | None = None
    """The target's own count of this prompt's input tokens (`calibrate_tokens`), if asked."""

    def chat_messages(self) -> list[dict[str, str]]:
        """The OpenAI/Ollama-style message list: the system prompt (if any), then the user's."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": self.prompt})
        return messages

    @property
    def full_text(self) -> str:
        """System prompt and prompt as one text, for token estimates."""
        return self.prompt if not self.system_prompt else self.system_prompt + "\n" + self.prompt


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What a provider's factory is built from. `api_key` lives only here, in memory."""

    target: TargetConfig
    api_key: str | None
    concurrency: int
    timeout_s: float
    secret_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The target's `secret_headers`, with their values (read from the environment)."""
    run_seed: int | None = None
    """The run's seed (`execute --seed`); the in-process mock mixes it into its plans, HTTP
    providers ignore it."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value that must never reach an event: the key and the secret headers."""
        values = [self.api_key, *self.secret_headers.values()]
        values += [v for k, v in self.target.headers.items() if is_sensitive_header(k)]
        return tuple(v for v in values if v)


class Attempt:
    """The outcome of one attempt, filled in by a provider while the response arrives."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "cached_tokens",
        "chunk_ns",
        "end_ns",
        "error_message",
        "error_type",
        "http_status",
        "input_rule",
        "input_tokens",
        "output_rule",
        "output_tokens",
        "reconnects",
        "retry_after_s",
        "server_request_id",
        "start_ns",
        "status",
        "text_chars",
        "token_source",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.start_ns = 0
        self.end_ns = 0
        self.chunk_ns: list[int] = []
        """perf_counter_ns of every read that carried content (text or a tool-call delta)."""
        self.status = "ok"
        self.http_status: int | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.token_source: str | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.tool_calls = 0
        self.server_request_id: str | None = None
        self.retry_after_s: float | None = None
        self.text_chars = 0
        """Characters of content received, for estimating output tokens when usage is missing."""
        self.reconnects = 0
        """Times the request was sent again on a new connection because a kept-alive one had
        been closed by the server before it answered a byte (`HttpProvider`)."""
        self.input_rule: str | None = None
        self.output_rule: str | None = None
        """How each count was obtained (`stages.execute.client.tokens`); set by `finish_tokens`."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, error_type: str, message: str, secrets: tuple[str, ...] = ()) -> None:
        """Record a failure; the first one wins (a cut stream stays a cut, not a later symptom)."""
        if self.error_type is not None:
            return
        self.error_type = error_type
        self.status = status_for_error(error_type)
        self.error_message = scrub(message, secrets)

    def set_usage(
        self, input_tokens: int | None, output_tokens: int | None, cached: int | None
    ) -> None:
        """Tokens as the server reported them (any may be missing), already checked with
        `token_count`; a later report of a count replaces an earlier one."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if cached is not None:
            self.cached_tokens = cached

    def finish_tokens(self, spec: RequestSpec) -> None:
        """Fill what the server did not report, and say how (`stages.execute.client.tokens`):
        `token_source` is `server` only when both counts came from this response."""
        self.input_rule = self.output_rule = SERVER
        if self.input_tokens is None:
            if spec.calibrated_input is not None:
                self.input_tokens, self.input_rule = spec.calibrated_input, CALIBRATED
            else:
                self.input_tokens, self.input_rule = estimate_tokens(spec.full_text), CHARS
        if self.output_tokens is None:
            if spec.stream:
                self.output_tokens, self.output_rule = len(self.chunk_ns), CHUNKS
            else:
                self.output_tokens, self.output_rule = (self.text_chars + 3) // 4, CHARS
        if self.cached_tokens is not None and self.cached_tokens > self.input_tokens:
            self.cached_tokens = self.input_tokens  # a cache cannot hold more than the prompt
        both = self.input_rule == SERVER and self.output_rule == SERVER
        self.token_source = "server" if both else "estimated"


class Provider(Protocol):
    """A client for one target. `send` fills `attempt`; it raises only `trio.Cancelled`."""

    kind: str

    async def send(self, spec: RequestSpec, attempt: Attempt) -> None: ...

    async def aclose(self) -> None: ...
