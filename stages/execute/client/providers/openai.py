"""OpenAI Chat Completions (`POST {base_url}/chat/completions`), streamed (SSE) or not.

Streaming asks for `stream_options.include_usage`, so the last event carries the server's token
counts (with `prompt_tokens_details.cached_tokens` where reported). A content chunk is a delta
with text (or reasoning text) or a tool-call fragment; role-only and usage-only chunks are not
content. Tool calls are counted by their distinct `index`, which every server keeps stable.
"""

from __future__ import annotations

from typing import Any, ClassVar

from stages.execute.client.providers.base import (
    WEATHER_TOOL,
    Attempt,
    ProtocolViolation,
    RequestSpec,
    token_count,
)
from stages.execute.client.providers.http import HttpProvider, StreamState
from stages.execute.client.template import ContentTemplate

__all__ = ["OpenAIProvider"]


class _State(StreamState):
    __slots__ = ("saw_choices", "tool_indexes")

    def __init__(self) -> None:
        super().__init__()
        self.saw_choices = False
        self.tool_indexes: set[int] = set()


_MAX_TOOL_CALLS = 1 << 16
"""Distinct tool-call indexes one response may use: past this it is garbage, not a model."""


def _usage(attempt: Attempt, usage: Any) -> None:
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise ProtocolViolation(f"usage is not an object: {usage!r:.40}")
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    attempt.set_usage(
        token_count(usage.get("prompt_tokens"), "prompt_tokens"),
        token_count(usage.get("completion_tokens"), "completion_tokens"),
        token_count(cached, "prompt_tokens_details.cached_tokens"),
    )


def _tool_choice(choice: str) -> str | dict[str, Any]:
    """The scenario's tool_choice as Chat Completions takes it."""
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _tool_index(call: dict[str, Any], state: _State) -> int:
    index = call.get("index", len(state.tool_indexes))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < _MAX_TOOL_CALLS:
        raise ProtocolViolation(f"tool call index is not a small integer: {index!r:.40}")
    return index


class OpenAIProvider(HttpProvider):
    """api.openai.com and anything else that speaks its Chat Completions API."""

    kind: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    path: ClassVar[str] = "chat/completions"
    end_marker: ClassVar[str] = "[DONE]"
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    """OpenAI's current name; other servers read `max_tokens` (the target's `max_tokens_field`
    chooses, docs/execute.md)."""

    def body(self, spec: RequestSpec) -> dict[str, Any]:
        field = self.target.max_tokens_field or self.max_tokens_field
        body: dict[str, Any] = {"model": self.model, "messages": spec.chat_messages()}
        for name in ("max_tokens", "max_completion_tokens") if field == "both" else (field,):
            body[name] = spec.max_tokens
        body["stream"] = spec.stream
        if spec.stream:
            body["stream_options"] = {"include_usage": True}
        if spec.tools:
            body["tools"] = [{"type": "function", "function": WEATHER_TOOL}]
            if spec.tool_choice is not None:
                body["tool_choice"] = _tool_choice(spec.tool_choice)
        return body

    def new_state(self) -> _State:
        return _State()

    def on_payload(self, payload: bytes, now_ns: int, state: _State, attempt: Attempt) -> bool:
        if state.known_content(payload, now_ns, attempt):  # the learned envelope: no parsing
            return False
        if payload == b"[DONE]":
            state.done = True
            return True
        obj = self.loads_unless_error(payload, attempt)
        if obj is None:
            return True
        choices = obj.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise ProtocolViolation(f"choices is not a list: {choices!r:.40}")
        if choices:
            state.saw_choices = True
            choice = choices[0]
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                text = (
                    delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                )
                calls = delta.get("tool_calls")
                if text is not None and not isinstance(text, str):
                    raise ProtocolViolation(f"delta content is not text: {text!r:.40}")
                if calls is not None and not isinstance(calls, list):
                    raise ProtocolViolation(f"delta tool_calls is not a list: {calls!r:.40}")
                if text or calls:
                    attempt.chunk_ns.append(now_ns)
                    if text:
                        attempt.text_chars += len(text)
                    for call in calls or ():
                        if isinstance(call, dict):
                            state.tool_indexes.add(_tool_index(call, state))
                    attempt.tool_calls = len(state.tool_indexes)
                    content = delta.get("content")
                    if content and isinstance(content, str) and not calls and not obj.get("usage"):
                        state.template = ContentTemplate.learn(payload, b"content", content)
        usage = obj.get("usage")
        if usage:
            _usage(attempt, usage)
        return False

    def on_stream_end(self, state: _State, attempt: Attempt) -> None:
        super().on_stream_end(state, attempt)
        if not state.saw_choices:
            self.fail(attempt, "protocol", "stream carried no choices")

    def on_body(self, body: Any, attempt: Attempt) -> None:
        _usage(attempt, body.get("usage"))
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            self.fail(attempt, "protocol", "response has no choices")
            return
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        if not isinstance(message, dict):
            self.fail(attempt, "protocol", "response choice has no message")
            return
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise ProtocolViolation(f"message content is not text: {text!r:.40}")
        if text:
            attempt.text_chars += len(text)
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise ProtocolViolation(f"message tool_calls is not a list: {calls!r:.40}")
        attempt.tool_calls = len(calls or ())
