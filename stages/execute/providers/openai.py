"""OpenAI Chat Completions (`POST {base_url}/chat/completions`), streamed (SSE) or not.

Streaming asks for `stream_options.include_usage`, so the last event carries the server's token
counts (with `prompt_tokens_details.cached_tokens` where reported). A content chunk is a delta
with text (or reasoning text) or a tool-call fragment; role-only and usage-only chunks are not
content. Tool calls are counted by their distinct `index`, which every server keeps stable.
"""

from __future__ import annotations

from typing import Any, ClassVar

from stages.execute.providers.base import WEATHER_TOOL, Attempt, RequestSpec
from stages.execute.providers.http import HttpProvider, StreamState
from stages.execute.providers.template import ContentTemplate

__all__ = ["OpenAIProvider"]


class _State(StreamState):
    __slots__ = ("saw_choices", "tool_indexes")

    def __init__(self) -> None:
        super().__init__()
        self.saw_choices = False
        self.tool_indexes: set[int] = set()


def _usage(attempt: Attempt, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    attempt.set_usage(usage.get("prompt_tokens"), usage.get("completion_tokens"), cached)


class OpenAIProvider(HttpProvider):
    """api.openai.com and anything else that speaks its Chat Completions API."""

    kind: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    path: ClassVar[str] = "chat/completions"
    end_marker: ClassVar[str] = "[DONE]"
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    """OpenAI's current name; older servers (vLLM, llama.cpp) read `max_tokens`."""

    def body(self, spec: RequestSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": spec.chat_messages(),
            self.max_tokens_field: spec.max_tokens,
            "stream": spec.stream,
        }
        if spec.stream:
            body["stream_options"] = {"include_usage": True}
        if spec.tools:
            body["tools"] = [{"type": "function", "function": WEATHER_TOOL}]
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
        if choices:
            state.saw_choices = True
            choice = choices[0]
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                text = (
                    delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                )
                calls = delta.get("tool_calls")
                if text or calls:
                    attempt.chunk_ns.append(now_ns)
                    if isinstance(text, str):
                        attempt.text_chars += len(text)
                    if isinstance(calls, list):
                        for call in calls:
                            if isinstance(call, dict):
                                state.tool_indexes.add(call.get("index", len(state.tool_indexes)))
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
        if isinstance(text, str):
            attempt.text_chars += len(text)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            attempt.tool_calls = len(calls)
