"""Anthropic's wire format for the mock server: `POST /v1/messages` and its error shape.

Why its own event sequence: the Anthropic SDK drives a state machine off named SSE events
(`message_start`, `content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`,
`message_delta`, `message_stop`) and rejects a stream that skips one. Overload is Anthropic's own
529 `overloaded_error`, not a 503, and `max_tokens` is required, as the real API requires it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stages.mock.sim import ResponsePlan
from stages.mock.wire.base import (
    BadRequest,
    Chat,
    Encoder,
    Provider,
    dumps,
    first_property,
    flag,
    message_texts,
    model_of,
    new_id,
    text_of,
    token_limit,
)

__all__ = ["ANTHROPIC", "AnthropicEncoder", "parse_anthropic"]

_ERRORS = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    431: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def parse_anthropic(body: dict[str, Any]) -> Chat:
    model = model_of(body)
    if body.get("max_tokens") is None:
        raise BadRequest("max_tokens: Field required", "max_tokens")
    max_tokens = token_limit(body.get("max_tokens"), "max_tokens")
    texts = message_texts(body, required=True)
    prompt = "\n".join([text_of(body.get("system")), *texts])
    chat = Chat(model, flag(body, "stream", False), max_tokens, prompt)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("tools: Input should be a valid list", "tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise BadRequest(f"tools.{i}.name: Field required", "tools")
        choice = body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else None
        if tools and kind != "none":
            tool = tools[0]
            if kind == "tool" and isinstance(choice, dict):
                tool = next((t for t in tools if t["name"] == choice.get("name")), tool)
            chat.tool_name, chat.tool_arg = tool["name"], first_property(tool.get("input_schema"))
    return chat


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


class AnthropicEncoder(Encoder):
    def __init__(self, chat: Chat, plan: ResponsePlan, created: int) -> None:
        super().__init__(chat, plan, created)
        self.id = new_id("msg_")
        self.tool_id = new_id("toolu_")
        kind = "text_delta" if chat.tool_name is None else "input_json_delta"
        field = "text" if chat.tool_name is None else "partial_json"
        self._prefix = (
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            f'"delta":{{"type":"{kind}","{field}":'
        )

    def _stop_reason(self) -> str:
        return self.finish_reason(tool="tool_use", length="max_tokens", stop="end_turn")

    def _usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": self.plan.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }

    def _message(self, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.chat.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self._usage(self.plan.output_tokens if stop else 1),
        }

    def _block(self, *, final: bool) -> dict[str, Any]:
        if self.chat.tool_name is None:
            return {"type": "text", "text": self.text if final else ""}
        return {
            "type": "tool_use",
            "id": self.tool_id,
            "name": self.chat.tool_name,
            "input": self.tool_arguments() if final else {},
        }

    def head(self) -> bytes:
        start = {"type": "message_start", "message": self._message([], None)}
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": self._block(final=False),
        }
        return (
            _sse("message_start", dumps(start))
            + _sse("content_block_start", dumps(block))
            + _sse("ping", '{"type": "ping"}')
        ).encode()

    def piece(self, i: int) -> bytes:
        return (self._prefix + dumps(self.pieces[i]) + "}}\n\n").encode()

    def malformed(self, i: int) -> bytes:
        return (self._prefix + dumps(self.pieces[i]) + "\n\n").encode()

    def tail(self) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
            "usage": {"output_tokens": self.plan.output_tokens},
        }
        return (
            _sse("content_block_stop", '{"type":"content_block_stop","index":0}')
            + _sse("message_delta", dumps(delta))
            + _sse("message_stop", '{"type":"message_stop"}')
        ).encode()

    def body(self) -> bytes:
        return dumps(self._message([self._block(final=True)], self._stop_reason())).encode()


def _error(status: int, message: str, param: str | None, request_id: str) -> bytes:
    kind = _ERRORS.get(status, "api_error")
    return dumps(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    ).encode()


def _models(names: Sequence[str]) -> dict[str, Any]:
    data: list[dict[str, Any]] = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
        for m in names
    ]
    return {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}


ANTHROPIC = Provider(
    "anthropic",
    parse_anthropic,
    AnthropicEncoder,
    _error,
    _models,
    request_id_header="request-id",
    unavailable_status=529,
)
