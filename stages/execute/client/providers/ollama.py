"""Ollama's native chat API (`POST {base_url}/api/chat`), streamed as NDJSON or whole.

The last line (`done: true`) carries `prompt_eval_count` and `eval_count`, which become the
input and output tokens. Ollama omits `prompt_eval_count` when the prompt was cached entirely,
so a missing input count is estimated. An `error` field mid-stream fails the attempt.
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

__all__ = ["OllamaProvider"]


def _message(attempt: Attempt, message: Any) -> bool:
    """Count a message's content and tool calls; True if it carried any."""
    if message is None:
        return False
    if not isinstance(message, dict):
        raise ProtocolViolation(f"message is not an object: {message!r:.40}")
    text = message.get("content") or message.get("thinking")
    calls = message.get("tool_calls")
    if text is not None and not isinstance(text, str):
        raise ProtocolViolation(f"message content is not text: {text!r:.40}")
    if calls is not None and not isinstance(calls, list):
        raise ProtocolViolation(f"message tool_calls is not a list: {calls!r:.40}")
    if text:
        attempt.text_chars += len(text)
    attempt.tool_calls += len(calls or ())
    return bool(text or calls)


def _usage(attempt: Attempt, obj: dict[str, Any]) -> None:
    attempt.set_usage(
        token_count(obj.get("prompt_eval_count"), "prompt_eval_count"),
        token_count(obj.get("eval_count"), "eval_count"),
        None,
    )


class OllamaProvider(HttpProvider):
    kind: ClassVar[str] = "ollama"
    default_base_url: ClassVar[str] = "http://localhost:11434"
    path: ClassVar[str] = "api/chat"
    ndjson: ClassVar[bool] = True
    end_marker: ClassVar[str] = "a line with done: true"

    def body(self, spec: RequestSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": spec.chat_messages(),
            "stream": spec.stream,
            "options": {"num_predict": spec.max_tokens},
        }
        if spec.tools:
            body["tools"] = [{"type": "function", "function": WEATHER_TOOL}]
        return body

    def on_payload(self, payload: bytes, now_ns: int, state: StreamState, attempt: Attempt) -> bool:
        if state.known_content(payload, now_ns, attempt):  # the learned envelope: no parsing
            return False
        obj = self.loads_unless_error(payload, attempt)
        if obj is None:
            return True
        message = obj.get("message")
        if _message(attempt, message):
            attempt.chunk_ns.append(now_ns)
            assert isinstance(message, dict)  # _message says so
            content = message.get("content")
            if content and isinstance(content, str) and not message.get("tool_calls"):
                if not obj.get("done"):
                    state.template = ContentTemplate.learn(payload, b"content", content)
        if obj.get("done"):
            _usage(attempt, obj)
            state.done = True
            return True
        return False

    def on_body(self, body: Any, attempt: Attempt) -> None:
        if "message" not in body:
            self.fail(attempt, "protocol", "response has no message")
            return
        _message(attempt, body.get("message"))
        _usage(attempt, body)
