"""A hostile HTTP server on 127.0.0.1: every misbehaviour a provider (or a proxy, or a broken
deployment) can throw at a client, one mode per URL prefix.

`http://127.0.0.1:PORT/<mode>/...` selects the mode; the rest of the path says whose wire format
a good answer takes (`/chat/completions`: OpenAI, `/v1/messages`: Anthropic, `/api/chat`:
Ollama). Requests are numbered per (mode, path): the odd ones (the 2nd, 4th, ...) get the
misbehaviour and the connection is closed after it, the even ones a well-formed answer, so a run
of three requests shows that the requests around a bad reply are recorded as usual.

A test that wants exact bytes scripts a path instead (`HostileServer.script`): each request to
it gets the next reply of the script, a `Canned` answer (status, headers, body pieces, framing,
a delay, a cut) or any mode above; `HostileServer.seen` keeps every request as it arrived.

Hand-written on purpose (no HTTP library on the server side): a library would refuse to send
half of these. Only the request side is parsed, and only as much as a client sends.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import trio

__all__ = [
    "ECHO_MODES",
    "PAYLOAD_MODES",
    "TRANSPORT_MODES",
    "Canned",
    "HostileServer",
    "Mode",
    "Seen",
    "hostile_server",
]

Send = Callable[[bytes], Awaitable[None]]

# -- good answers in each wire format ------------------------------------------------------------


def _openai_chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta}],
        **extra,
    }


def _sse(obj: Any, event: str | None = None) -> bytes:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


class Wire:
    """A provider's good stream and body, with room for one bad element."""

    name = ""

    def stream(self, bad: str | None = None) -> list[bytes]:
        raise NotImplementedError

    def body(self, bad: str | None = None) -> bytes:
        raise NotImplementedError

    def content(self, text: str) -> bytes:
        """One more content chunk (for endless streams)."""
        raise NotImplementedError

    def tool_calls(self, count: int) -> list[bytes]:
        raise NotImplementedError

    def payload_modes(self) -> tuple[str, ...]:
        return ("usage_string", "usage_inf", "usage_1e30", "usage_negative", "shape", "text_number")


class OpenAIWire(Wire):
    name = "openai"

    def _usage(self, bad: str | None) -> dict[str, Any]:
        value: Any = {
            "usage_string": "lots",
            "usage_1e30": 1e30,
            "usage_negative": -4000,
        }.get(bad or "", 11)
        return {"prompt_tokens": value, "completion_tokens": 2}

    def stream(self, bad: str | None = None) -> list[bytes]:
        chunks = [
            _sse(_openai_chunk({"role": "assistant"})),
            _sse(_openai_chunk({"content": "Hel"})),
        ]
        if bad == "shape":
            chunks.append(_sse({"id": "c1", "choices": 5}))
        elif bad == "text_number":
            chunks.append(_sse(_openai_chunk({"content": 12345})))
        elif bad == "tool_index_list":
            chunks.append(_sse(_openai_chunk({"tool_calls": [{"index": [1], "function": {}}]})))
        else:
            chunks.append(_sse(_openai_chunk({"content": "lo"})))
        usage = json.dumps({"id": "c1", "choices": [], "usage": self._usage(bad)}).encode()
        if bad == "usage_inf":
            usage = (
                b'{"id":"c1","choices":[],"usage":{"prompt_tokens":1e400,"completion_tokens":2}}'
            )
        return [*chunks, _sse(usage), b"data: [DONE]\n\n"]

    def body(self, bad: str | None = None) -> bytes:
        message: Any = {"role": "assistant", "content": 12345 if bad == "text_number" else "Hello"}
        choices: Any = 5 if bad == "shape" else [{"index": 0, "message": message}]
        raw = json.dumps({"id": "c1", "choices": choices, "usage": self._usage(bad)}).encode()
        if bad == "usage_inf":
            raw = raw.replace(b'"prompt_tokens": 11', b'"prompt_tokens": 1e400')
        return raw

    def content(self, text: str) -> bytes:
        return _sse(_openai_chunk({"content": text}))

    def tool_calls(self, count: int) -> list[bytes]:
        calls = [
            _sse(
                _openai_chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": f"c{i}",
                                "function": {"name": "get_weather", "arguments": "{}"},
                            }
                        ]
                    }
                )
            )
            for i in range(count)
        ]
        return [*calls, b"data: [DONE]\n\n"]

    def payload_modes(self) -> tuple[str, ...]:
        return (*super().payload_modes(), "tool_index_list")


class AnthropicWire(Wire):
    name = "anthropic"

    def _start(self, bad: str | None) -> bytes:
        value: Any = {"usage_string": "lots", "usage_1e30": 1e30, "usage_negative": -4000}.get(
            bad or "", 11
        )
        start = {
            "type": "message_start",
            "message": {"id": "m1", "usage": {"input_tokens": value, "output_tokens": 1}},
        }
        raw = json.dumps(start).encode()
        if bad == "usage_inf":
            raw = raw.replace(b'"input_tokens": 11', b'"input_tokens": 1e400')
        return _sse(raw, "message_start")

    def _delta(self, text: Any) -> bytes:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return _sse(delta, "content_block_delta")

    def stream(self, bad: str | None = None) -> list[bytes]:
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        middle = self._delta(12345 if bad == "text_number" else "Hel")
        if bad == "shape":
            middle = _sse(
                {"type": "content_block_delta", "index": 0, "delta": 5}, "content_block_delta"
            )
            middle += _sse({"type": "message_start", "message": {"usage": [1, 2]}}, "message_start")
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        }
        return [
            self._start(bad),
            _sse(block, "content_block_start"),
            middle,
            self._delta("lo"),
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(end, "message_delta"),
            _sse({"type": "message_stop"}, "message_stop"),
        ]

    def body(self, bad: str | None = None) -> bytes:
        value: Any = {"usage_string": "lots", "usage_1e30": 1e30, "usage_negative": -4000}.get(
            bad or "", 11
        )
        text: Any = 12345 if bad == "text_number" else "Hello"
        content: Any = 5 if bad == "shape" else [{"type": "text", "text": text}]
        raw = json.dumps(
            {
                "id": "m1",
                "type": "message",
                "content": content,
                "usage": {"input_tokens": value, "output_tokens": 2},
            }
        ).encode()
        if bad == "usage_inf":
            raw = raw.replace(b'"input_tokens": 11', b'"input_tokens": 1e400')
        return raw

    def content(self, text: str) -> bytes:
        return self._delta(text)

    def tool_calls(self, count: int) -> list[bytes]:
        out = [self._start(None)]
        for i in range(count):
            block = {
                "type": "content_block_start",
                "index": i,
                "content_block": {
                    "type": "tool_use",
                    "id": f"t{i}",
                    "name": "get_weather",
                    "input": {},
                },
            }
            out.append(_sse(block, "content_block_start"))
        out.append(_sse({"type": "message_stop"}, "message_stop"))
        return out


class OllamaWire(Wire):
    name = "ollama"

    def _done(self, bad: str | None) -> bytes:
        value: Any = {"usage_string": "lots", "usage_1e30": 1e30, "usage_negative": -4000}.get(
            bad or "", 11
        )
        raw = json.dumps(
            {"model": "m", "done": True, "prompt_eval_count": value, "eval_count": 2}
        ).encode()
        if bad == "usage_inf":
            raw = raw.replace(b'"prompt_eval_count": 11', b'"prompt_eval_count": 1e400')
        return raw + b"\n"

    def _line(self, content: Any) -> bytes:
        return (
            json.dumps(
                {"model": "m", "message": {"role": "assistant", "content": content}, "done": False}
            ).encode()
            + b"\n"
        )

    def stream(self, bad: str | None = None) -> list[bytes]:
        middle = self._line(12345 if bad == "text_number" else "Hel")
        if bad == "shape":
            middle = json.dumps({"model": "m", "message": 5, "done": False}).encode() + b"\n"
        return [middle, self._line("lo"), self._done(bad)]

    def body(self, bad: str | None = None) -> bytes:
        message: Any = (
            5
            if bad == "shape"
            else {"role": "assistant", "content": 12345 if bad == "text_number" else "Hello"}
        )
        raw = self._done(bad).rstrip(b"\n")
        obj = json.loads(raw.replace(b"1e400", b"0"))
        obj["message"] = message
        out = json.dumps(obj).encode()
        if bad == "usage_inf":
            out = out.replace(b'"prompt_eval_count": 0', b'"prompt_eval_count": 1e400')
        return out

    def content(self, text: str) -> bytes:
        return self._line(text)

    def tool_calls(self, count: int) -> list[bytes]:
        calls = [{"function": {"name": "get_weather", "arguments": {}}} for _ in range(count)]
        line = json.dumps(
            {
                "model": "m",
                "message": {"role": "assistant", "content": "", "tool_calls": calls},
                "done": False,
            }
        )
        return [line.encode() + b"\n", self._done(None)]


def _wire(path: str) -> Wire:
    if path.endswith("/v1/messages"):
        return AnthropicWire()
    if path.endswith("/api/chat"):
        return OllamaWire()
    return OpenAIWire()


# -- HTTP framing, by hand -------------------------------------------------------------------------


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_STREAM_HEAD = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}


def _stream_head(wire: Wire) -> bytes:
    kind = "application/x-ndjson" if wire.name == "ollama" else "text/event-stream"
    return _head(200, "OK", {**_STREAM_HEAD, "content-type": kind})


def _whole(status: int, body: bytes, **headers: str) -> bytes:
    head = {"content-type": "application/json", "content-length": str(len(body)), **headers}
    return _head(status, "OK" if status < 300 else "Error", head) + body


async def _good(send: Send, wire: Wire, streaming: bool) -> None:
    if not streaming:
        await send(_whole(200, wire.body()))
        return
    await send(_stream_head(wire))
    for piece in wire.stream():
        await send(_chunk(piece))
    await send(b"0\r\n\r\n")


# -- the misbehaviours -----------------------------------------------------------------------------

Mode = Callable[[Send, Wire, bool, bytes], Awaitable[None]]
"""(send, the wire format of a good answer, whether it was asked to stream, the request's head)."""


async def _forever(send: Send, make: Callable[[int], bytes]) -> None:
    i = 0
    while True:  # until the client gives up and the send fails
        await send(make(i))
        i += 1


async def garbage(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage, not HTTP\r\n\r\n")


async def endless_headers(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(b"HTTP/1.1 200 OK\r\n")
    await _forever(send, lambda i: f"x-header-{i}: {'v' * 100}\r\n".encode())


async def headers_then_close(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire))


async def cut_mid_chunk(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire) + _chunk(wire.stream()[0]) + b"100\r\n" + b"data: {")


async def bad_chunk_size(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire) + b"zz\r\nnot a chunk\r\n")


async def redirect(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(
        _head(302, "Found", {"location": "http://127.0.0.1:9/elsewhere", "content-length": "0"})
    )


async def odd_status(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    body = b'{"error": {"message": "what is 999"}}'
    await send(_head(999, "Weird", {"content-length": str(len(body))}) + body)


async def trickle(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    for byte in _whole(200, wire.body()):
        await send(bytes([byte]))
        await trio.sleep(0.4)


async def hang(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await trio.sleep_forever()


async def endless_stream(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    if not streaming:
        await send(
            _head(200, "OK", {"content-type": "application/json", "transfer-encoding": "chunked"})
        )
        await send(_chunk(b'{"choices": [{"message": {"content": "'))
        await _forever(send, lambda i: _chunk(b"x" * 65536))
    await send(_stream_head(wire))
    piece = wire.content("tok ")
    await _forever(send, lambda i: _chunk(piece * 256))


async def endless_lines(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire))
    line = b"data: " + b"x" * 1000 + b"\n" if wire.name != "ollama" else b"x" * 1000
    await _forever(send, lambda i: _chunk(line * 64))


async def huge_line(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire))
    prefix = (
        b'data: {"choices":[{"delta":{"content":"'
        if wire.name != "ollama"
        else b'{"message":{"content":"'
    )
    await send(_chunk(prefix))
    block = b"y" * 65536
    for _ in range(20 * 16):  # 20 MB on one line
        await send(_chunk(block))
    await send(_chunk(b'"}}]}\n\n') + b"0\r\n\r\n")


async def invalid_utf8(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire))
    first, *_ = wire.stream()
    bad = wire.content("\u00e9").replace(b"\\u00e9", b"\xff\xfe\xc3")
    await send(_chunk(first) + _chunk(bad) + b"0\r\n\r\n")


async def invalid_json(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire))
    bad = b"data: {not json\n\n" if wire.name != "ollama" else b"{not json\n"
    await send(_chunk(wire.stream()[0]) + _chunk(bad) + b"0\r\n\r\n")


async def gzip_bomb(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    bomb = _bomb()
    fields = {"content-type": "application/json", "content-encoding": "gzip"}
    await send(_head(200, "OK", {**fields, "content-length": str(len(bomb))}) + bomb)


def _bomb() -> bytes:
    """256 MB of zeros, gzipped to a quarter of a megabyte: 256 gzip members of 1 MiB each (one
    valid gzip stream, RFC 1952). Compressing 256 MB at once took 0.8 s of CPU, inside the
    request, and on a loaded machine past the client's timeout (a `timeout`, not the body)."""
    return gzip.compress(b"\0" * (1 << 20), compresslevel=9, mtime=0) * 256


async def endless_error(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(
        _head(
            500,
            "Internal Server Error",
            {"content-type": "text/plain", "transfer-encoding": "chunked"},
        )
    )
    await _forever(send, lambda i: _chunk(b"e" * 65536))


async def surrogate_error(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    body = b'{"error": {"message": "bad \\ud800 input \\udfff"}}'
    await send(_whole(400, body))


async def keep_open(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    """A complete answer, end marker included, on a body that never ends."""
    await send(_stream_head(wire))
    for piece in wire.stream():
        await send(_chunk(piece))
    await trio.sleep_forever()


async def many_tool_calls(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    await send(_stream_head(wire))
    for piece in wire.tool_calls(5000):
        await send(_chunk(piece))
    await send(b"0\r\n\r\n")


async def echo(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    """What a careless server does with credentials: repeats the whole request head back, in
    an error body and in its request-id header."""
    lines = head.decode("latin-1").split("\r\n")
    secret = ("authorization", "x-api-key")
    auth = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith(secret)), "-")
    body = json.dumps({"error": {"message": "denied: " + " | ".join(lines)}}).encode()
    await send(_whole(401, body, **{"x-request-id": auth}))


async def echo_stream(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
    """The request head back as a stream chunk that is not JSON (the malformed-JSON message)."""
    await send(_stream_head(wire))
    await send(_chunk(b"data: " + head.replace(b"\r\n", b" | ") + b"\n\n") + b"0\r\n\r\n")


def payload(bad: str) -> Mode:
    async def mode(send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
        if not streaming:
            await send(_whole(200, wire.body(bad)))
            return
        await send(_stream_head(wire))
        for piece in wire.stream(bad):
            await send(_chunk(piece))
        await send(b"0\r\n\r\n")

    return mode


TRANSPORT_MODES: dict[str, Mode] = {
    "garbage": garbage,
    "endless_headers": endless_headers,
    "headers_then_close": headers_then_close,
    "cut_mid_chunk": cut_mid_chunk,
    "bad_chunk_size": bad_chunk_size,
    "redirect": redirect,
    "odd_status": odd_status,
    "trickle": trickle,
    "hang": hang,
    "endless_stream": endless_stream,
    "endless_lines": endless_lines,
    "huge_line": huge_line,
    "invalid_utf8": invalid_utf8,
    "invalid_json": invalid_json,
    "gzip_bomb": gzip_bomb,
    "endless_error": endless_error,
    "surrogate_error": surrogate_error,
    "keep_open": keep_open,
    "many_tool_calls": many_tool_calls,
}
ECHO_MODES: dict[str, Mode] = {"echo": echo, "echo_stream": echo_stream}
PAYLOAD_MODES = (
    "usage_string",
    "usage_inf",
    "usage_1e30",
    "usage_negative",
    "shape",
    "text_number",
    "tool_index_list",
)


# -- exact answers, scripted per path --------------------------------------------------------------


@dataclass(frozen=True)
class Canned:
    """One exact answer, usable wherever a mode is: a status line, headers and body pieces.

    Chunked (the default, as providers stream), each piece goes out as one HTTP chunk, and so
    reaches the client's body iterator as one read whatever the socket coalesced (h11 yields a
    chunk's data as its own event); else the pieces go as one body with a content-length.
    `delay_s` passes before the status line. `cut` leaves a chunked body unfinished (no final
    chunk) and closes the connection, as a peer that goes away mid-stream; otherwise the
    connection stays open for the client's next request, as a keep-alive server's does."""

    status: int = 200
    pieces: tuple[bytes, ...] = ()
    headers: Mapping[str, str] | None = None
    chunked: bool = True
    delay_s: float = 0.0
    cut: bool = False

    @classmethod
    def stream(
        cls, body: bytes, *, split: bytes = b"\n\n", headers: Mapping[str, str] | None = None
    ) -> Canned:
        """A 200 event stream, one chunk per event (each piece ends with `split`)."""
        parts = body.split(split)
        pieces = tuple(p + split for p in parts[:-1]) + ((parts[-1],) if parts[-1] else ())
        return cls(200, pieces, {"content-type": "text/event-stream", **(headers or {})})

    @classmethod
    def whole(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Canned:
        """A whole JSON body (`obj` serialised; bytes as they are) with a content-length."""
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        head = {"content-type": "application/json", **(headers or {})}
        return cls(status, (body,) if body else (), head, chunked=False)

    @property
    def keep_alive(self) -> bool:
        return not self.cut

    async def __call__(self, send: Send, wire: Wire, streaming: bool, head: bytes) -> None:
        if self.delay_s:
            await trio.sleep(self.delay_s)
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        fields = dict(self.headers or {})
        if self.chunked:
            fields["transfer-encoding"] = "chunked"
            await send(_head(self.status, reason, fields))
            for piece in self.pieces:
                if piece:  # an empty chunk would be the last chunk
                    await send(_chunk(piece))
            if not self.cut:
                await send(b"0\r\n\r\n")
            return
        body = b"".join(self.pieces)
        await send(_head(self.status, reason, {**fields, "content-length": str(len(body))}) + body)


_EXHAUSTED = Canned.whole(
    500, {"error": {"message": "hostile server: no reply left in the script"}}
)


@dataclass(frozen=True)
class Seen:
    """A request as it arrived, for a test to assert what the client sent."""

    path: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    at: float
    """`trio.current_time()` when its last byte had been read."""


class HostileServer:
    """Serves every mode; `requests[(mode, path)]` counts what arrived, `seen` lists it."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.seen: list[Seen] = []
        self._scripts: dict[str, deque[Mode]] = {}

    def script(self, path: str, *replies: Mode) -> None:
        """Answer the next requests to exactly `path` with `replies`, one each, in order (a
        scripted path is never read as a mode); past the last one, a 500 that says so."""
        self._scripts.setdefault(path, deque()).extend(replies)

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                request, buffer = await _read_request(stream, buffer)
                if request is None:
                    return
                path, body, head = request
                self.seen.append(Seen(path, _fields(head), body, trio.current_time()))
                script = self._scripts.get(path)
                if script is not None:
                    reply = script.popleft() if script else _EXHAUSTED
                    streaming = bool(json.loads(body or b"{}").get("stream"))
                    await reply(stream.send_all, _wire(path), streaming, head)
                    if isinstance(reply, Canned) and reply.keep_alive:
                        continue
                    return  # as after a misbehaviour: the connection is spent
                mode, _, rest = path.lstrip("/").partition("/")
                number = self.requests[(mode, rest)]
                self.requests[(mode, rest)] += 1
                streaming = bool(json.loads(body or b"{}").get("stream", mode != "plain"))
                wire = _wire(path)
                if number % 2 == 0 or mode == "plain":
                    await _good(stream.send_all, wire, streaming)
                    continue
                behave = TRANSPORT_MODES.get(mode) or ECHO_MODES.get(mode) or payload(mode)
                await behave(stream.send_all, wire, streaming, head)
                return  # the connection is spent after a misbehaviour
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def _read_request(
    stream: trio.SocketStream, buffer: bytes
) -> tuple[tuple[str, bytes, bytes] | None, bytes]:
    """(path, body, head) of the next request, and the bytes after it; None when the client
    closed."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None, b""
        buffer += data
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    path = head.decode("latin-1").split("\r\n", 1)[0].split(" ")[1]
    length = int(_fields(head).get("content-length", "0"))
    while len(buffer) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None, b""
        buffer += data
    return (path, buffer[:length], head), buffer[length:]


def _fields(head: bytes) -> dict[str, str]:
    """The header fields of a request head, names in lower case."""
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


@asynccontextmanager
async def hostile_server() -> AsyncIterator[tuple[str, HostileServer]]:
    """The server on a free port of 127.0.0.1, in the current trio loop: (base URL, server)."""
    server = HostileServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", server
        nursery.cancel_scope.cancel()
