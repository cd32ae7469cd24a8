"""What the mock server's three wire formats share: the parsed request, refusals, the encoder.

Why one module under the three provider modules: OpenAI, Anthropic and Ollama disagree on field
names and framing but agree on almost everything else (a model, messages with string roles,
positive token limits, tools whose first parameter carries the output). Parsing those rules once
keeps the three providers refusing the same malformed input in the same way, and the `Encoder`
base keeps the plan-to-bytes decisions that do not depend on the wire (tool-call fragments, why
generation ended) in one place, so the providers only say how their bytes look.

Dependencies go one way: `base` ← `openai`, `anthropic`, `ollama` ←
`stages.mock.http.server`. Nothing here knows about HTTP or sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.scenario import MAX_MOCK_OUTPUT_TOKENS
from stages.mock.sim import ResponsePlan

__all__ = [
    "JSON",
    "NDJSON",
    "SSE",
    "BadRequest",
    "Chat",
    "Encoder",
    "Provider",
    "dumps",
    "first_property",
    "flag",
    "function_tools",
    "message_texts",
    "model_of",
    "new_id",
    "positive_int",
    "text_of",
    "token_limit",
    "tool_fragments",
]

JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"
NDJSON = "application/x-ndjson"


def dumps(obj: Any) -> str:
    """Compact JSON, as the providers send it (no spaces, non-ASCII kept as is)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str) -> str:
    """A provider-style identifier (`chatcmpl-…`, `msg_…`, `req_…`): 24 random hex digits."""
    return prefix + uuid.uuid4().hex[:24]


class BadRequest(Exception):
    """A request the provider would refuse; answered with `status` in that provider's shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclass(slots=True)
class Chat:
    """What the mock needs from a generation request, whatever the provider."""

    model: str
    stream: bool
    max_tokens: int | None
    prompt: str
    tool_name: str | None = None
    tool_arg: str = "input"
    include_usage: bool = False
    mimic: str = "openai"
    """The server whose quirks the answer reproduces (`MockConfiguration.mimic`)."""


# ---------------------------------------------------------------------------------------------
# Request parsing: the rules the providers share, enough to refuse what they would refuse.


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def message_texts(body: dict[str, Any], *, required: bool) -> list[str]:
    """The text of each of `body["messages"]`; Ollama alone lets them be absent."""
    messages = body.get("messages")
    if messages is None and not required:
        return []
    if not isinstance(messages, list) or (required and not messages):
        raise BadRequest("'messages' must be a non-empty array of message objects", "messages")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
        texts.append(text_of(message.get("content")))
    return texts


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", "model")
    return model


def positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'{name}' must be a positive integer", name)
    return value


def token_limit(value: Any, name: str) -> int | None:
    """A request's max-tokens field: a positive integer of at most `MAX_MOCK_OUTPUT_TOKENS`.

    The mock plans every token's due time before the first is sent, so a larger limit would be
    memory the request makes the server hold; it is refused as a provider refuses a limit over
    its model's, naming the field.
    """
    count = positive_int(value, name)
    if count is not None and count > MAX_MOCK_OUTPUT_TOKENS:
        raise BadRequest(
            f"'{name}' must be at most {MAX_MOCK_OUTPUT_TOKENS} (the mock's limit), got {count}",
            name,
        )
    return count


def flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be a boolean", name)
    return value


def first_property(schema: Any) -> str:
    """The argument a tool call fills with the output: the schema's first property."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            return str(next(iter(props)))
    return "input"


def function_tools(body: dict[str, Any]) -> list[tuple[str, str]]:
    """OpenAI and Ollama tools: [{"type": "function", "function": {"name", "parameters"}}]."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", "tools")
    found = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadRequest(f"tools[{i}].function.name is required", f"tools[{i}]")
        found.append((fn["name"], first_property(fn.get("parameters"))))
    return found


# ---------------------------------------------------------------------------------------------
# Encoding: what every provider's response derives from the plan in the same way.


def tool_fragments(arg: str, tokens: tuple[str, ...]) -> list[str]:
    """The tool call's arguments JSON split into one fragment per output token."""
    frags = [dumps(t)[1:-1] for t in tokens]
    frags[0] = "{" + dumps(arg) + ':"' + frags[0]
    frags[-1] += '"}'
    return frags


class Encoder:
    """The bytes of one response; `piece(i)` is due at the plan's i-th token offset.

    A stream is `head()`, then `piece(i)` (or `malformed(i)`, a chunk that is not JSON) for each
    token, then `tail()`; a whole response is `body()`.
    """

    stream_type = SSE

    def __init__(self, chat: Chat, plan: ResponsePlan, created: int) -> None:
        self.chat = chat
        self.plan = plan
        self.created = created
        self.pieces: list[str] = (
            tool_fragments(chat.tool_arg, plan.text_tokens)
            if chat.tool_name and plan.text_tokens
            else list(plan.text_tokens)
        )
        self.finish_length = chat.max_tokens is not None and plan.output_tokens >= chat.max_tokens

    @property
    def text(self) -> str:
        """The whole generated text."""
        return "".join(self.plan.text_tokens)

    def tool_arguments(self) -> dict[str, str]:
        return {self.chat.tool_arg: self.text}

    def finish_reason(self, *, length: str, stop: str, tool: str | None = None) -> str:
        """The provider's word for why generation ended: a tool call, the token limit, or done.

        `tool` None: the provider reports a tool call as an ordinary stop (Ollama does).
        """
        if tool is not None and self.chat.tool_name is not None:
            return tool
        return length if self.finish_length else stop

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


@dataclass(frozen=True, slots=True)
class Provider:
    """One wire format: how its requests parse, its responses encode and its errors look."""

    name: str
    parse: Callable[[dict[str, Any]], Chat]
    encoder: type[Encoder]
    error: Callable[[int, str, str | None, str], bytes]
    """(status, message, param, request id) → the provider's error body."""
    models: Callable[[Sequence[str]], dict[str, Any]]
    """Model names → the provider's model listing."""
    request_id_header: str | None
    unavailable_status: int
    retry_after_ms: bool = False
    """Whether a 429 also carries `retry-after-ms` (OpenAI's SDK prefers it)."""
