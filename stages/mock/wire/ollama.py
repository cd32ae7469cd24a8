"""Ollama's wire format for the mock server: `POST /api/chat` as NDJSON, and its error shape.

Why it differs from the SSE providers: Ollama streams by default (`"stream": false` must be asked
for), ends with a `done` line carrying nanosecond timings, sends a tool call whole in one line once
the model has produced it (not as argument fragments), and its errors are a bare `{"error": …}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from stages.mock.sim import ResponsePlan
from stages.mock.wire.base import (
    NDJSON,
    BadRequest,
    Chat,
    Encoder,
    Provider,
    dumps,
    flag,
    function_tools,
    message_texts,
    model_of,
    token_limit,
)

__all__ = ["OLLAMA", "OllamaEncoder", "parse_ollama"]


def parse_ollama(body: dict[str, Any]) -> Chat:
    model = model_of(body)
    prompt = "\n".join(message_texts(body, required=False))
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'options' must be an object", "options")
    predict = (options or {}).get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and predict < 0:
        predict = None  # Ollama: -1 means "until the model stops"
    chat = Chat(model, flag(body, "stream", True), token_limit(predict, "num_predict"), prompt)
    tools = function_tools(body)
    if tools:
        chat.tool_name, chat.tool_arg = tools[0]
    return chat


class OllamaEncoder(Encoder):
    stream_type = NDJSON

    def __init__(self, chat: Chat, plan: ResponsePlan, created: int) -> None:
        super().__init__(chat, plan, created)
        stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._prefix = '{"model":' + dumps(chat.model) + ',"created_at":"' + stamp + '",'

    def _message(self, i: int) -> dict[str, Any]:
        if self.chat.tool_name is None:
            return {"role": "assistant", "content": self.plan.text_tokens[i]}
        # Ollama sends a tool call whole, in one chunk, once the model has produced it.
        call = {"function": {"name": self.chat.tool_name, "arguments": self.tool_arguments()}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}

    def piece(self, i: int) -> bytes:
        if self.chat.tool_name is not None and i < len(self.pieces) - 1:
            return b""
        return (self._prefix + '"message":' + dumps(self._message(i)) + ',"done":false}\n').encode()

    def malformed(self, i: int) -> bytes:
        return (self._prefix + '"message":' + dumps(self._message(i))[:-1] + "\n").encode()

    def _stats(self) -> str:
        plan = self.plan
        total = round(plan.duration_s * 1e9)
        prompt = round(plan.ttft_s * 1e9)
        return dumps(
            {
                # Ollama reports a tool call as an ordinary stop.
                "done_reason": self.finish_reason(length="length", stop="stop"),
                "done": True,
                "total_duration": total,
                "load_duration": 0,
                "prompt_eval_count": plan.input_tokens,
                "prompt_eval_duration": prompt,
                "eval_count": plan.output_tokens,
                "eval_duration": total - prompt,
            }
        )[1:]

    def tail(self) -> bytes:
        empty = '"message":{"role":"assistant","content":""},'
        return (self._prefix + empty + self._stats() + "\n").encode()

    def body(self) -> bytes:
        if self.chat.tool_name is None:
            message = {"role": "assistant", "content": self.text}
        else:
            message = self._message(len(self.pieces) - 1)
        return (self._prefix + '"message":' + dumps(message) + "," + self._stats()).encode()


def _error(status: int, message: str, param: str | None, request_id: str) -> bytes:
    return dumps({"error": message}).encode()


def _models(names: Sequence[str]) -> dict[str, Any]:
    return {"models": [{"name": m, "model": m, "size": 0, "digest": ""} for m in names]}


OLLAMA = Provider(
    "ollama",
    parse_ollama,
    OllamaEncoder,
    _error,
    _models,
    request_id_header=None,
    unavailable_status=503,
)
