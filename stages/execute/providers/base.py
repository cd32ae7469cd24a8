"""What every provider client shares: the request it is asked to send, and the attempt it fills.

`Attempt` is the one mutable object on the hot path: a provider appends a timestamp per content
chunk and sets a handful of fields; nothing else is allocated per chunk. The runner turns a
finished attempt into one row of the `requests` table. A provider never raises for a provider
failure (a 429, a timeout, a cut stream): it calls `Attempt.fail`, and the failure is data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from schemas import TargetConfig
from stages.execute.mock_sim import estimate_input_tokens
from stages.execute.taxonomy import scrub, status_for_error

__all__ = [
    "WEATHER_TOOL",
    "Attempt",
    "Provider",
    "ProviderSettings",
    "RequestSpec",
]

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
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
    transport: httpx.AsyncBaseTransport | None = None
    """Tests inject `httpx.MockTransport`; None means real sockets."""


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
        "input_tokens",
        "output_tokens",
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
        """Tokens as the server reported them (any of them may be missing)."""
        if input_tokens is not None:
            self.input_tokens = int(input_tokens)
        if output_tokens is not None:
            self.output_tokens = int(output_tokens)
        if cached is not None:
            self.cached_tokens = int(cached)

    def finish_tokens(self, spec: RequestSpec) -> None:
        """Fill what the server did not report by estimation, and say so in `token_source`.

        Output is estimated as the larger of the content chunks seen (servers usually send one
        token per chunk) and the content's characters / 4 (for servers that batch tokens).
        """
        source = "server"
        if self.input_tokens is None:
            self.input_tokens = estimate_input_tokens(spec.full_text)
            source = "estimated"
        if self.output_tokens is None:
            self.output_tokens = max(len(self.chunk_ns), (self.text_chars + 3) // 4)
            source = "estimated"
        self.token_source = source


class Provider(Protocol):
    """A client for one target. `send` fills `attempt`; it raises only `trio.Cancelled`."""

    kind: str

    async def send(self, spec: RequestSpec, attempt: Attempt) -> None: ...

    async def aclose(self) -> None: ...
