"""Anthropic Messages (`POST {base_url}/v1/messages`), streamed (SSE) or not.

Usage arrives in two parts: `message_start` has the input side (and cache reads/creations),
`message_delta` the final output count. Anthropic's `input_tokens` excludes cached tokens, so the
event's `input_tokens` is input + cache reads + cache creations (the prompt's full size, as
OpenAI counts it) and `cached_tokens` is the cache reads. A content chunk is a text, thinking or
tool-input delta; a `tool_use` block start counts one tool call.
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

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"
_DELTA_TEXT = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
}


_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def _usage(attempt: Attempt, usage: Any) -> None:
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise ProtocolViolation(f"usage is not an object: {usage!r:.40}")
    base = token_count(usage.get("input_tokens"), "input_tokens")
    read = token_count(usage.get("cache_read_input_tokens"), "cache_read_input_tokens")
    created = token_count(usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
    total = None if base is None else base + (read or 0) + (created or 0)
    attempt.set_usage(total, token_count(usage.get("output_tokens"), "output_tokens"), read)


def _text(delta: dict[str, Any], field: str) -> str | None:
    text = delta.get(field)
    if text is not None and not isinstance(text, str):
        raise ProtocolViolation(f"delta {field} is not text: {text!r:.40}")
    return text


class AnthropicProvider(HttpProvider):
    kind: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    path: ClassVar[str] = "v1/messages"
    end_marker: ClassVar[str] = "message_stop"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def body(self, spec: RequestSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": spec.max_tokens,
            "messages": [{"role": "user", "content": spec.prompt}],
            "stream": spec.stream,
        }
        if spec.system_prompt:
            body["system"] = spec.system_prompt
        if spec.tools:
            tool = WEATHER_TOOL
            body["tools"] = [
                {
                    "name": tool["name"],
                    "description": tool["description"],
                    "input_schema": tool["parameters"],
                }
            ]
            choice = spec.tool_choice
            if choice is not None:
                body["tool_choice"] = _TOOL_CHOICE.get(choice) or {"type": "tool", "name": choice}
        return body

    def on_payload(self, payload: bytes, now_ns: int, state: StreamState, attempt: Attempt) -> bool:
        if state.known_content(payload, now_ns, attempt):  # the learned envelope: no parsing
            return False
        obj = self.loads(payload, attempt)
        if obj is None:
            return True
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                kind_of = delta.get("type")
                field = _DELTA_TEXT.get(kind_of) if isinstance(kind_of, str) else None
                text = _text(delta, field) if field else None
                if text and field is not None:
                    attempt.chunk_ns.append(now_ns)
                    if field != "partial_json":
                        attempt.text_chars += len(text)
                        state.template = ContentTemplate.learn(payload, field.encode(), text)
        elif kind == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                attempt.tool_calls += 1
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                _usage(attempt, message.get("usage"))
        elif kind == "message_delta":
            _usage(attempt, obj.get("usage"))
        elif kind == "message_stop":
            state.done = True
            return True
        elif kind == "error":
            error = obj.get("error")
            etype = error.get("type") if isinstance(error, dict) else None
            error_type = "rate_limited" if etype == "rate_limit_error" else "server_error"
            self.fail(attempt, error_type, f"error in stream: {self.error_detail(obj)}")
            return True
        return False

    def on_body(self, body: Any, attempt: Attempt) -> None:
        _usage(attempt, body.get("usage"))
        content = body.get("content")
        if not isinstance(content, list):
            self.fail(attempt, "protocol", "response has no content list")
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                attempt.tool_calls += 1
            text = _text(block, "text")
            if text:
                attempt.text_chars += len(text)
