"""OpenAI's wire format for the mock server: `POST /v1/chat/completions` and its error shape.

Why byte-level care: the official SDK (and tools like guidellm, aiperf, vLLM's `bench serve`)
parse these chunks, so they carry what OpenAI sends: a role-only chunk before the first token,
`"usage":null` on every chunk when `stream_options.include_usage` asks for the final usage chunk
(which has empty `choices`), `[DONE]` last. Chunks are built from a prefix and suffix computed once
per response, since a loaded mock encodes thousands of them a second.
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
    flag,
    function_tools,
    message_texts,
    model_of,
    new_id,
    token_limit,
)

__all__ = ["OPENAI", "UNCAPPED_TOKENS", "OpenAIEncoder", "mimic_openai_server", "parse_openai"]

UNCAPPED_TOKENS = 4096
"""What a server that ignored the request's token cap generates (llama-cpp-python ran to its
context: 4,065 tokens in 90 s)."""

_ERRORS = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    431: ("invalid_request_error", "request_header_fields_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


def parse_openai(body: dict[str, Any]) -> Chat:
    model = model_of(body)
    prompt = "\n".join(message_texts(body, required=True))
    max_tokens = token_limit(body.get("max_completion_tokens"), "max_completion_tokens")
    if max_tokens is None:
        max_tokens = token_limit(body.get("max_tokens"), "max_tokens")
    stream = flag(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    chat = Chat(model, stream, max_tokens, prompt, include_usage=stream and include_usage)
    tools = function_tools(body)
    choice = body.get("tool_choice")
    if tools and choice != "none":
        name, arg = tools[0]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            name, arg = next(((n, a) for n, a in tools if n == wanted), (name, arg))
        chat.tool_name, chat.tool_arg = name, arg
    return chat


_CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
"""The chat template a llama.cpp-based server wraps a prompt in: its tokens count as input."""


def mimic_openai_server(chat: Chat, body: dict[str, Any], mimic: str) -> None:
    """What another OpenAI-compatible server would make of the request (docs/mock.md)."""
    chat.mimic = mimic
    if mimic != "openai":
        chat.prompt = _CHATML.format(chat.prompt)
    if mimic == "llama-cpp-python":
        chat.include_usage = False  # it ignores stream_options
        cap = token_limit(body.get("max_tokens"), "max_tokens")  # and max_completion_tokens
        chat.max_tokens = cap if cap is not None else UNCAPPED_TOKENS


class OpenAIEncoder(Encoder):
    def __init__(self, chat: Chat, plan: ResponsePlan, created: int) -> None:
        super().__init__(chat, plan, created)
        self.id = new_id("chatcmpl-")
        self.call_id = new_id("call_")
        base = dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "system_fingerprint": "fp_mock",
            }
        )
        self._prefix = "data: " + base[:-1] + ',"choices":[{"index":0,"delta":'
        usage_null = ',"usage":null' if chat.include_usage else ""
        self._suffix = ',"logprobs":null,"finish_reason":null}]' + usage_null + "}\n\n"

    def _chunk(self, delta: dict[str, Any]) -> str:
        return self._prefix + dumps(delta) + self._suffix

    def _delta(self, i: int) -> dict[str, Any]:
        text = self.pieces[i]
        if self.chat.tool_name is None:
            return {"content": text}
        if i:
            return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
        call = {
            "index": 0,
            "id": self.call_id,
            "type": "function",
            "function": {"name": self.chat.tool_name, "arguments": text},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}

    def piece(self, i: int) -> bytes:
        if self.chat.mimic == "llama.cpp":
            return self._llama_piece(i).encode()
        out = self._chunk(self._delta(i))
        if i == 0 and self.chat.tool_name is None:
            # Like OpenAI: a role-only chunk (empty content) comes just before the first token.
            out = self._chunk({"role": "assistant", "content": "", "refusal": None}) + out
        return out.encode()

    def _llama_piece(self, i: int) -> str:
        """As llama.cpp's server streams (server-chat.cpp): a role chunk with null content
        first; a tool call (grammar-constrained, as `tool_choice: required` makes it) opens with
        its index, id, type and name only, then each token is an arguments fragment."""
        text = self.pieces[i]
        head = self._chunk({"role": "assistant", "content": None}) if i == 0 else ""
        if self.chat.tool_name is None:
            return head + self._chunk({"content": text})
        if i == 0:
            call = {"index": 0, "id": self.call_id, "type": "function"}
            head += self._chunk(
                {"tool_calls": [{**call, "function": {"name": self.chat.tool_name}}]}
            )
        return head + self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})

    def malformed(self, i: int) -> bytes:
        return (self._prefix + dumps(self._delta(i))[:-1] + "\n\n").encode()

    def _finish(self) -> str:
        return self.finish_reason(tool="tool_calls", length="length", stop="stop")

    def _usage(self) -> dict[str, Any]:
        p, n = self.plan.input_tokens, self.plan.output_tokens
        return {
            "prompt_tokens": p,
            "completion_tokens": n,
            "total_tokens": p + n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def tail(self) -> bytes:
        end = self._prefix + '{},"logprobs":null,"finish_reason":' + dumps(self._finish()) + "}]"
        end += (',"usage":null}' if self.chat.include_usage else "}") + "\n\n"
        if self.chat.include_usage:
            end += self._prefix[: -len('"choices":[{"index":0,"delta":')]
            end += '"choices":[],"usage":' + dumps(self._usage()) + "}\n\n"
        return (end + "data: [DONE]\n\n").encode()

    def body(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if self.chat.tool_name is None:
            message["content"] = self.text
        else:
            message["tool_calls"] = [
                {
                    "id": self.call_id,
                    "type": "function",
                    "function": {"name": self.chat.tool_name, "arguments": "".join(self.pieces)},
                }
            ]
        return dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.chat.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": self._finish(),
                    }
                ],
                "usage": self._usage(),
                "system_fingerprint": "fp_mock",
                "service_tier": "default",
            }
        ).encode()


def _error(status: int, message: str, param: str | None, request_id: str) -> bytes:
    kind, code = _ERRORS.get(status, ("server_error", None))
    return dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()


def _models(names: Sequence[str]) -> dict[str, Any]:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in names]
    return {"object": "list", "data": data}


OPENAI = Provider(
    "openai",
    parse_openai,
    OpenAIEncoder,
    _error,
    _models,
    request_id_header="x-request-id",
    unavailable_status=503,
    retry_after_ms=True,
)
"""Also the shape of answers whose provider is unknown (a bad path, a request that is not HTTP)."""
