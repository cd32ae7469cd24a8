"""An HTTP mock of OpenAI, Anthropic and Ollama that injects the faults real providers produce.

Why a server when there is an in-process mock: the real provider clients (and other tools such
as guidellm, aiperf, vLLM's `bench serve`) only meet the network. This server speaks each wire
protocol closely enough for the official SDKs: OpenAI `POST /v1/chat/completions` (SSE
`chat.completion.chunk`s, the usage chunk of `stream_options.include_usage`, `[DONE]`), Anthropic
`POST /v1/messages` (its SSE event sequence), Ollama `POST /api/chat` (NDJSON), each with tool
calls when the request offers tools, plus `GET /v1/models`, `GET /api/tags` and `GET /health`.

Every response follows a `ResponsePlan` from `mock_sim`, the same model as the in-process
provider, replayed by absolute deadlines (`trio.sleep_until(t0 + offset)`) so a loaded server
does not drift. Injected failures look like the provider's own: 429 with `retry-after` and the
provider's error JSON, 500, 503 (Anthropic: 529 overloaded_error), a hang that sends nothing,
a stream cut without its end (the connection is closed mid-body, so HTTP clients raise), and a
chunk that is not JSON. A request the provider would refuse gets a 400 in its error shape.

Robustness: every connection runs in its own task and any failure in it ends that connection
only; a client that goes away mid-response is noticed (a task watches the socket for EOF) and
its request is dropped, freeing its concurrency slot. Keep-alive works as the SDKs expect.

HTTP/1.1 framing is h11's (a sans-I/O parser), so this module only maps requests to plans.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from typing import Any

import h11
import trio

from schemas.scenario import MockConfiguration
from stages.execute.mock_sim import (
    STATUS_ERRORS,
    ConcurrencyGate,
    MockSimulator,
    ResponsePlan,
    hold_memory,
)

__all__ = ["REQUEST_INDEX_HEADER", "MockServer", "run_server", "serve"]

REQUEST_INDEX_HEADER = "x-mock-request-index"
"""Optional request header pinning the plan index, for runs that must be reproducible under
concurrency (without it, requests are numbered in order of arrival)."""

_MAX_BODY = 8 * 1024 * 1024
_MAX_HEADER = 64 * 1024
_READ_SIZE = 65536
_LINGER_S = 1.0
_IDLE_TIMEOUT_S = 120.0
"""A keep-alive connection with no new request for this long is closed (clients use ~5-90 s)."""
_MODELS = ("mock-small", "mock-large")
_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"
_NDJSON = "application/x-ndjson"

Headers = list[tuple[str, str]]


def _response(status: int, headers: Headers) -> h11.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else ""
    return h11.Response(status_code=status, headers=headers, reason=reason)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclass(slots=True)
class _Chat:
    """What the mock needs from a generation request, whatever the provider."""

    model: str
    stream: bool
    max_tokens: int | None
    prompt: str
    tool_name: str | None = None
    tool_arg: str = "input"
    include_usage: bool = False


# ---------------------------------------------------------------------------------------------
# Request parsing: the provider's own rules, enough to refuse what it would refuse.


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _messages(body: dict[str, Any], *, required: bool) -> list[str]:
    messages = body.get("messages")
    if messages is None and not required:
        return []
    if not isinstance(messages, list) or (required and not messages):
        raise _BadRequest("'messages' must be a non-empty array of message objects", "messages")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
        texts.append(_text_of(message.get("content")))
    return texts


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("'model' is required and must be a non-empty string", "model")
    return model


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadRequest(f"'{name}' must be a positive integer", name)
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _BadRequest(f"'{name}' must be a boolean", name)
    return value


def _first_property(schema: Any) -> str:
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            return str(next(iter(props)))
    return "input"


def _function_tools(body: dict[str, Any]) -> list[tuple[str, str]]:
    """OpenAI and Ollama tools: [{"type": "function", "function": {"name", "parameters"}}]."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _BadRequest("'tools' must be an array", "tools")
    found = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _BadRequest(f"tools[{i}].function.name is required", f"tools[{i}]")
        found.append((fn["name"], _first_property(fn.get("parameters"))))
    return found


def _parse_openai(body: dict[str, Any]) -> _Chat:
    model = _model(body)
    prompt = "\n".join(_messages(body, required=True))
    max_tokens = _positive_int(body.get("max_completion_tokens"), "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _positive_int(body.get("max_tokens"), "max_tokens")
    stream = _flag(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _BadRequest("'stream_options' must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    chat = _Chat(model, stream, max_tokens, prompt, include_usage=stream and include_usage)
    tools = _function_tools(body)
    choice = body.get("tool_choice")
    if tools and choice != "none":
        name, arg = tools[0]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            name, arg = next(((n, a) for n, a in tools if n == wanted), (name, arg))
        chat.tool_name, chat.tool_arg = name, arg
    return chat


def _parse_anthropic(body: dict[str, Any]) -> _Chat:
    model = _model(body)
    if body.get("max_tokens") is None:
        raise _BadRequest("max_tokens: Field required", "max_tokens")
    max_tokens = _positive_int(body.get("max_tokens"), "max_tokens")
    texts = _messages(body, required=True)
    prompt = "\n".join([_text_of(body.get("system")), *texts])
    chat = _Chat(model, _flag(body, "stream", False), max_tokens, prompt)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _BadRequest("tools: Input should be a valid list", "tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _BadRequest(f"tools.{i}.name: Field required", "tools")
        choice = body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else None
        if tools and kind != "none":
            tool = tools[0]
            if kind == "tool" and isinstance(choice, dict):
                tool = next((t for t in tools if t["name"] == choice.get("name")), tool)
            chat.tool_name, chat.tool_arg = tool["name"], _first_property(tool.get("input_schema"))
    return chat


def _parse_ollama(body: dict[str, Any]) -> _Chat:
    model = _model(body)
    prompt = "\n".join(_messages(body, required=False))
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise _BadRequest("'options' must be an object", "options")
    predict = (options or {}).get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and predict < 0:
        predict = None  # Ollama: -1 means "until the model stops"
    chat = _Chat(model, _flag(body, "stream", True), _positive_int(predict, "num_predict"), prompt)
    tools = _function_tools(body)
    if tools:
        chat.tool_name, chat.tool_arg = tools[0]
    return chat


# ---------------------------------------------------------------------------------------------
# Encoders: one per provider and response, turning plan tokens into that provider's bytes.


def _tool_fragments(arg: str, tokens: tuple[str, ...]) -> list[str]:
    """The tool call's arguments JSON split into one fragment per output token."""
    frags = [_dumps(t)[1:-1] for t in tokens]
    frags[0] = "{" + _dumps(arg) + ':"' + frags[0]
    frags[-1] += '"}'
    return frags


class _Encoder:
    """The bytes of one response; `piece(i)` is due at the plan's i-th token offset."""

    stream_type = _SSE

    def __init__(self, chat: _Chat, plan: ResponsePlan, created: int) -> None:
        self.chat = chat
        self.plan = plan
        self.created = created
        self.pieces: list[str] = (
            _tool_fragments(chat.tool_arg, plan.text_tokens)
            if chat.tool_name and plan.text_tokens
            else list(plan.text_tokens)
        )
        self.finish_length = chat.max_tokens is not None and plan.output_tokens >= chat.max_tokens

    def tool_arguments(self) -> dict[str, str]:
        return {self.chat.tool_arg: "".join(self.plan.text_tokens)}

    def head(self) -> bytes:
        return b""

    def piece(self, i: int) -> bytes:
        raise NotImplementedError

    def malformed(self, i: int) -> bytes:
        raise NotImplementedError

    def tail(self) -> bytes:
        raise NotImplementedError

    def body(self) -> bytes:
        raise NotImplementedError


class _OpenAIEncoder(_Encoder):
    def __init__(self, chat: _Chat, plan: ResponsePlan, created: int) -> None:
        super().__init__(chat, plan, created)
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.call_id = "call_" + uuid.uuid4().hex[:24]
        base = _dumps(
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
        return self._prefix + _dumps(delta) + self._suffix

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
        out = self._chunk(self._delta(i))
        if i == 0 and self.chat.tool_name is None:
            # Like OpenAI: a role-only chunk (empty content) comes just before the first token.
            out = self._chunk({"role": "assistant", "content": "", "refusal": None}) + out
        return out.encode()

    def malformed(self, i: int) -> bytes:
        return (self._prefix + _dumps(self._delta(i))[:-1] + "\n\n").encode()

    def _finish(self) -> str:
        if self.chat.tool_name is not None:
            return "tool_calls"
        return "length" if self.finish_length else "stop"

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
        end = self._prefix + '{},"logprobs":null,"finish_reason":' + _dumps(self._finish()) + "}]"
        end += (',"usage":null}' if self.chat.include_usage else "}") + "\n\n"
        if self.chat.include_usage:
            end += self._prefix[: -len('"choices":[{"index":0,"delta":')]
            end += '"choices":[],"usage":' + _dumps(self._usage()) + "}\n\n"
        return (end + "data: [DONE]\n\n").encode()

    def body(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if self.chat.tool_name is None:
            message["content"] = "".join(self.plan.text_tokens)
        else:
            message["tool_calls"] = [
                {
                    "id": self.call_id,
                    "type": "function",
                    "function": {"name": self.chat.tool_name, "arguments": "".join(self.pieces)},
                }
            ]
        return _dumps(
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


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


class _AnthropicEncoder(_Encoder):
    def __init__(self, chat: _Chat, plan: ResponsePlan, created: int) -> None:
        super().__init__(chat, plan, created)
        self.id = "msg_" + uuid.uuid4().hex[:24]
        self.tool_id = "toolu_" + uuid.uuid4().hex[:24]
        kind = "text_delta" if chat.tool_name is None else "input_json_delta"
        field = "text" if chat.tool_name is None else "partial_json"
        self._prefix = (
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            f'"delta":{{"type":"{kind}","{field}":'
        )

    def _stop_reason(self) -> str:
        if self.chat.tool_name is not None:
            return "tool_use"
        return "max_tokens" if self.finish_length else "end_turn"

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
            return {"type": "text", "text": "".join(self.plan.text_tokens) if final else ""}
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
            _sse("message_start", _dumps(start))
            + _sse("content_block_start", _dumps(block))
            + _sse("ping", '{"type": "ping"}')
        ).encode()

    def piece(self, i: int) -> bytes:
        return (self._prefix + _dumps(self.pieces[i]) + "}}\n\n").encode()

    def malformed(self, i: int) -> bytes:
        return (self._prefix + _dumps(self.pieces[i]) + "\n\n").encode()

    def tail(self) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
            "usage": {"output_tokens": self.plan.output_tokens},
        }
        return (
            _sse("content_block_stop", '{"type":"content_block_stop","index":0}')
            + _sse("message_delta", _dumps(delta))
            + _sse("message_stop", '{"type":"message_stop"}')
        ).encode()

    def body(self) -> bytes:
        return _dumps(self._message([self._block(final=True)], self._stop_reason())).encode()


class _OllamaEncoder(_Encoder):
    stream_type = _NDJSON

    def __init__(self, chat: _Chat, plan: ResponsePlan, created: int) -> None:
        super().__init__(chat, plan, created)
        stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._prefix = '{"model":' + _dumps(chat.model) + ',"created_at":"' + stamp + '",'

    def _message(self, i: int) -> dict[str, Any]:
        if self.chat.tool_name is None:
            return {"role": "assistant", "content": self.plan.text_tokens[i]}
        # Ollama sends a tool call whole, in one chunk, once the model has produced it.
        call = {"function": {"name": self.chat.tool_name, "arguments": self.tool_arguments()}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}

    def piece(self, i: int) -> bytes:
        if self.chat.tool_name is not None and i < len(self.pieces) - 1:
            return b""
        return (
            self._prefix + '"message":' + _dumps(self._message(i)) + ',"done":false}\n'
        ).encode()

    def malformed(self, i: int) -> bytes:
        return (self._prefix + '"message":' + _dumps(self._message(i))[:-1] + "\n").encode()

    def _stats(self) -> str:
        plan = self.plan
        total = round(plan.duration_s * 1e9)
        prompt = round(plan.ttft_s * 1e9)
        return _dumps(
            {
                "done_reason": "length" if self.finish_length else "stop",
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
            message = {"role": "assistant", "content": "".join(self.plan.text_tokens)}
        else:
            message = self._message(len(self.pieces) - 1)
        return (self._prefix + '"message":' + _dumps(message) + "," + self._stats()).encode()


# ---------------------------------------------------------------------------------------------
# Providers: parsing, encoding and the error shape of each.

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_MESSAGES = {
    "rate_limit": "Rate limit reached for requests (mock). Please try again in {retry}.",
    "server_error": "The server had an error while processing your request (mock).",
    "unavailable": "The server is overloaded or not ready yet (mock).",
    "overload": "Too many concurrent requests (mock concurrency limit {limit}).",
}


@dataclass(frozen=True, slots=True)
class _Provider:
    name: str
    parse: Callable[[dict[str, Any]], _Chat]
    encoder: type[_Encoder]
    request_id_header: str | None
    unavailable_status: int

    def error(self, status: int, message: str, param: str | None, rid: str) -> bytes:
        if self.name == "anthropic":
            kind = _ANTHROPIC_ERRORS.get(status, "api_error")
            return _dumps(
                {"type": "error", "error": {"type": kind, "message": message}, "request_id": rid}
            ).encode()
        if self.name == "ollama":
            return _dumps({"error": message}).encode()
        kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
        return _dumps(
            {"error": {"message": message, "type": kind, "param": param, "code": code}}
        ).encode()


_OPENAI = _Provider("openai", _parse_openai, _OpenAIEncoder, "x-request-id", 503)
_ANTHROPIC = _Provider("anthropic", _parse_anthropic, _AnthropicEncoder, "request-id", 529)
_OLLAMA = _Provider("ollama", _parse_ollama, _OllamaEncoder, None, 503)
_GENERATE = {"/v1/chat/completions": _OPENAI, "/v1/messages": _ANTHROPIC, "/api/chat": _OLLAMA}
_LISTINGS = {"/v1/models", "/api/tags", "/health"}


def _provider_for(path: str) -> _Provider:
    if path.startswith("/v1/messages"):
        return _ANTHROPIC
    if path.startswith("/api/"):
        return _OLLAMA
    return _OPENAI


# ---------------------------------------------------------------------------------------------
# HTTP: one task per connection, h11 for the framing.


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class _Outcome:
    status: int = 0
    index: int | None = None
    note: str = ""


class _Connection:
    """One client connection: reads requests, sends responses, notices the client leaving."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER)
        self.peer_gone = False
        self.must_close = False

    async def send(self, *events: h11.Event) -> None:
        """Send events in one write: a response's last bytes and its end must arrive together,
        or a client that stops reading at `[DONE]` finds the connection unfinished and drops it."""
        data = b"".join(self.h11.send(event) or b"" for event in events)
        if data:
            await self.stream.send_all(data)

    async def linger(self) -> None:
        """Close politely after an error: stop sending, then drain what the client still sends,
        so the kernel does not answer its unread bytes with a reset that destroys our reply."""
        with trio.move_on_after(_LINGER_S):
            await self.stream.send_eof()
            drained = 0
            while drained < _MAX_BODY:
                data = await self.stream.receive_some(_READ_SIZE)
                if not data:
                    break
                drained += len(data)

    async def _next_event(self) -> h11.Event | None:
        """The next event from the client; None if h11 pauses (a pipelined request too early)."""
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return None
            data = await self.stream.receive_some(_READ_SIZE)
            self.h11.receive_data(data)

    async def read_request(self) -> _Request | None:
        """The next request, or None when the client closed or stayed idle too long."""
        with trio.move_on_after(_IDLE_TIMEOUT_S):
            event = await self._next_event()
            if not isinstance(event, h11.Request):
                return None
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > _MAX_BODY:
                raise _BadRequest("request body too large", None, 413)
            if self.h11.client_is_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            body = bytearray()
            while True:
                part = await self._next_event()
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > _MAX_BODY:
                        raise _BadRequest("request body too large", None, 413)
                elif isinstance(part, h11.EndOfMessage):
                    target = event.target.decode("latin-1").split("?", 1)[0]
                    return _Request(event.method.decode("latin-1"), target, headers, bytes(body))
                else:
                    return None
        return None

    async def watch_peer(self, scope: trio.CancelScope) -> None:
        """Cancel `scope` when the client closes the connection (or floods it) mid-response."""
        received = 0
        while True:
            try:
                data = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            received += len(data)
            if not data or received > _MAX_BODY:
                self.peer_gone = True
                scope.cancel()
                return
            self.h11.receive_data(data)  # a pipelined next request: kept for its turn

    def reusable(self) -> bool:
        if self.peer_gone or self.must_close:
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


class MockServer:
    """The mock's HTTP front end: routes requests to a shared `MockSimulator` and gate."""

    def __init__(self, config: MockConfiguration, log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.simulator = MockSimulator(config)
        self.gate = ConcurrencyGate.from_config(config)
        self.log = log
        self.requests = 0
        """Generation requests numbered so far (the next request's index)."""
        self.connections = 0
        """Connections accepted so far (keep-alive reuse shows as fewer connections)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection until it closes; nothing it sends can escape this function."""
        conn = _Connection(stream)
        self.connections += 1
        try:
            while True:
                try:
                    request = await conn.read_request()
                except (_BadRequest, h11.RemoteProtocolError) as exc:
                    # Too large or not HTTP: answer in OpenAI's shape (the path is unknown or
                    # untrusted), then close without a reset that would swallow the answer.
                    conn.must_close = True
                    if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        if isinstance(exc, _BadRequest):
                            status, msg = exc.status, exc.message
                        else:
                            status, msg = exc.error_status_hint, f"malformed HTTP request: {exc}"
                        await self._error(conn, _OPENAI, status, msg, None, _Outcome())
                        if self.log is not None:
                            self.log(f"- - {status} {msg}")
                        await conn.linger()
                    break
                if request is None:
                    break
                await self._serve_request(conn, request)
                if not conn.reusable():
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass
        except Exception as exc:  # noqa: BLE001 - one broken connection must not stop the server
            if self.log is not None:
                self.log(f"connection error: {type(exc).__name__}: {exc}")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_request(self, conn: _Connection, request: _Request) -> None:
        started = time.perf_counter()
        outcome = _Outcome()
        provider = _provider_for(request.path)

        async def respond() -> None:
            try:
                await self._route(conn, request, provider, outcome)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.peer_gone = True
            except _BadRequest as exc:
                await self._error(conn, provider, exc.status, exc.message, exc.param, outcome)
            except Exception:
                # A bug of ours: answer 500 if nothing was sent yet, else cut; re-raised to log.
                conn.must_close = True
                if conn.h11.our_state is h11.SEND_RESPONSE:
                    msg = "internal error in the mock server"
                    await self._error(conn, provider, 500, msg, None, outcome)
                raise
            finally:
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.watch_peer, nursery.cancel_scope)
            nursery.start_soon(respond)
        if conn.peer_gone and not outcome.note:
            outcome.note = "client went away"
        if self.log is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            index = f" #{outcome.index}" if outcome.index is not None else ""
            note = f" {outcome.note}" if outcome.note else ""
            status = outcome.status or "-"
            self.log(f"{request.method} {request.path} {status} {elapsed_ms:.1f}ms{index}{note}")

    async def _route(
        self, conn: _Connection, request: _Request, provider: _Provider, outcome: _Outcome
    ) -> None:
        method, path = request.method, request.path
        if path in _GENERATE:
            if method != "POST":
                raise _BadRequest(f"{method} is not allowed on {path}; use POST", None, 405)
            await self._generate(conn, request, _GENERATE[path], outcome)
        elif path in _LISTINGS:
            if method != "GET":
                raise _BadRequest(f"{method} is not allowed on {path}; use GET", None, 405)
            await self._listing(conn, request, outcome)
        else:
            raise _BadRequest(f"Unknown request URL: {method} {path}", None, 404)

    async def _listing(self, conn: _Connection, request: _Request, outcome: _Outcome) -> None:
        payload: dict[str, Any]
        if request.path == "/health":
            payload = {
                "status": "ok",
                "in_flight": self.gate.in_flight,
                "waiting": self.gate.waiting,
                "requests": self.requests,
                "connections": self.connections,
            }
        elif request.path == "/api/tags":
            models = [{"name": m, "model": m, "size": 0, "digest": ""} for m in _MODELS]
            payload = {"models": models}
        elif "anthropic-version" in request.headers:
            data: list[dict[str, Any]] = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
                for m in _MODELS
            ]
            payload = {
                "data": data,
                "has_more": False,
                "first_id": _MODELS[0],
                "last_id": _MODELS[-1],
            }
        else:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in _MODELS]
            payload = {"object": "list", "data": data}
        await self._send(conn, 200, _JSON, _dumps(payload).encode(), [], outcome)

    async def _send(
        self,
        conn: _Connection,
        status: int,
        content_type: str,
        body: bytes,
        headers: Headers,
        outcome: _Outcome,
    ) -> None:
        outcome.status = status
        all_headers = [("content-type", content_type), ("content-length", str(len(body)))]
        await conn.send(
            _response(status, all_headers + headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )

    async def _error(
        self,
        conn: _Connection,
        provider: _Provider,
        status: int,
        message: str,
        param: str | None,
        outcome: _Outcome,
        headers: Headers | None = None,
    ) -> None:
        rid = "req_" + uuid.uuid4().hex[:24]
        extra = list(headers or [])
        if provider.request_id_header is not None:
            extra.append((provider.request_id_header, rid))
        if conn.must_close:
            extra.append(("connection", "close"))
        body = provider.error(status, message, param, rid)
        await self._send(conn, status, _JSON, body, extra, outcome)

    def _index_of(self, request: _Request) -> int:
        pinned = request.headers.get(REQUEST_INDEX_HEADER)
        if pinned is not None:
            try:
                return int(pinned)
            except ValueError:
                raise _BadRequest(f"{REQUEST_INDEX_HEADER} must be an integer") from None
        index = self.requests
        self.requests += 1
        return index

    async def _generate(
        self, conn: _Connection, request: _Request, provider: _Provider, outcome: _Outcome
    ) -> None:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest("We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise _BadRequest("The request body must be a JSON object.")
        chat = provider.parse(body)
        index = self._index_of(request)
        outcome.index = index
        async with self.gate.slot() as admitted:
            if not admitted:
                outcome.note = "rejected: over the concurrency limit"
                await self._rate_limited(conn, provider, outcome, overload=True)
                return
            plan = self.simulator.plan(index, chat.max_tokens, chat.prompt)
            held = hold_memory(self.config.memory_usage_simulation)
            try:
                await self._play(conn, provider, chat, plan, outcome)
            finally:
                del held

    async def _rate_limited(
        self, conn: _Connection, provider: _Provider, outcome: _Outcome, *, overload: bool
    ) -> None:
        seconds = self.config.retry_after.total_seconds()
        headers = [("retry-after", str(math.ceil(seconds)))]
        if provider is _OPENAI:
            headers.append(("retry-after-ms", str(round(seconds * 1000))))
        if overload:
            message = _MESSAGES["overload"].format(limit=self.config.concurrency_limit)
        else:
            message = _MESSAGES["rate_limit"].format(retry=f"{seconds:g}s")
        await self._error(conn, provider, 429, message, None, outcome, headers)

    async def _play(
        self,
        conn: _Connection,
        provider: _Provider,
        chat: _Chat,
        plan: ResponsePlan,
        outcome: _Outcome,
    ) -> None:
        """Replay `plan` on this connection, by absolute deadlines from t0."""
        t0 = trio.current_time()
        error = plan.error
        if error is not None:
            outcome.note = f"injected {error}"
        if error in STATUS_ERRORS:
            if error == "rate_limit":
                await self._rate_limited(conn, provider, outcome, overload=False)
            elif error == "server_error":
                await self._error(conn, provider, 500, _MESSAGES[error], None, outcome)
            else:
                status = provider.unavailable_status
                await self._error(conn, provider, status, _MESSAGES["unavailable"], None, outcome)
            return
        if error == "hang":
            await trio.sleep(plan.ttft_s)
            conn.must_close = True  # then drop the connection without a word
            return
        encoder = provider.encoder(chat, plan, int(time.time()))
        rid_header = provider.request_id_header
        headers = [("x-mock-request-index", str(outcome.index))]
        if rid_header is not None:
            headers.append((rid_header, "req_" + uuid.uuid4().hex[:24]))
        if chat.stream:
            await self._stream(conn, encoder, headers, t0, outcome)
        else:
            await self._whole(conn, encoder, headers, t0, outcome)

    async def _stream(
        self, conn: _Connection, encoder: _Encoder, headers: Headers, t0: float, outcome: _Outcome
    ) -> None:
        plan = encoder.plan
        offsets = plan.token_offsets_s
        cut = plan.cut_after if plan.error == "cut" else None
        bad = plan.cut_after if plan.error == "malformed" else None
        outcome.status = 200
        head = [("content-type", encoder.stream_type), ("cache-control", "no-cache")]
        await conn.send(_response(200, head + headers))
        pending = encoder.head()
        if pending:
            await conn.send(h11.Data(data=pending))
        pending = b""
        count = len(offsets)
        for i in range(count):
            await trio.sleep_until(t0 + offsets[i])
            if i == cut:
                if pending:
                    await conn.send(h11.Data(data=pending))
                conn.must_close = True  # the body ends without its last chunk: a cut stream
                return
            pending += encoder.malformed(i) if i == bad else encoder.piece(i)
            # Tokens whose deadlines have already passed go out in one write.
            if i + 1 == count or t0 + offsets[i + 1] > trio.current_time():
                if pending:
                    await conn.send(h11.Data(data=pending))
                pending = b""
        await conn.send(h11.Data(data=encoder.tail()), h11.EndOfMessage())

    async def _whole(
        self, conn: _Connection, encoder: _Encoder, headers: Headers, t0: float, outcome: _Outcome
    ) -> None:
        plan = encoder.plan
        body = encoder.body()
        if plan.error == "cut" and plan.cut_after is not None:
            await trio.sleep_until(t0 + plan.token_offsets_s[plan.cut_after])
            outcome.status = 200
            head = [("content-type", _JSON), ("content-length", str(len(body)))]
            await conn.send(
                _response(200, head + headers),
                h11.Data(data=body[: len(body) // 2]),
            )
            conn.must_close = True
            return
        await trio.sleep_until(t0 + plan.duration_s)
        if plan.error == "malformed":
            body = body[: len(body) // 2]
        await self._send(conn, 200, _JSON, body, headers, outcome)


async def serve(
    config: MockConfiguration,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    log: Callable[[str], None] | None = None,
) -> None:
    """Serve the mock until cancelled; reports the bound port (useful with port 0) when ready."""
    server = MockServer(config, log)
    listeners = await trio.open_tcp_listeners(port, host=host)
    actual = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_listeners, server.handle, listeners))
        task_status.started(actual)


def run_server(
    config: MockConfiguration, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False
) -> int:
    """Run the mock server in the foreground until SIGINT or SIGTERM; returns the exit code.

    Prints `mock server listening on http://HOST:PORT` to stdout once it accepts connections;
    with `verbose`, one line per request on stderr.
    """

    def log(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    async def main() -> None:
        # The signal receiver is open before the address is printed, so a signal sent by
        # anyone who saw the address always reaches this loop and shuts down cleanly.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(
                    partial(serve, config, host, port, log=log if verbose else None)
                )
                shown = f"[{host}]" if ":" in host else host
                sys.stdout.write(f"mock server listening on http://{shown}:{bound}\n")
                sys.stdout.flush()
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except OSError as exc:
        sys.stderr.write(f"mock server: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return 1
    return 0
