"""The HTTP attempt shared by every wire-format provider: send, time, frame, classify.

A subclass says only what differs per API: the path, the headers, the body, and how to read one
payload (an SSE event or an NDJSON line) or a whole non-streamed body. Everything about time and
failure is here, once: `start_ns` is when the request's first bytes were written on a kept-alive
connection (`sent_ns`: the awaits httpcore passes through before writing can queue this task
behind others, and that is the client's time, not the server's), or just before a new connection
was opened (connecting and TLS are part of what that request waited for); each network read is
stamped with when its bytes arrived (`stages/net/arrival.py`: not when this task got round
to them); and every transport or protocol failure becomes `Attempt.fail`.
Bodies are read as httpcore's connection yields them, with `accept-encoding: identity`, so
`bytes_received` counts the body's bytes as they crossed the wire (the chunked framing aside) and
no decompression sits between a chunk and its timestamp.

Whatever a server sends becomes one event, never a crash: a value of the wrong type or out of
range (`ProtocolViolation`, or any error the parsers meet in a reply they did not expect) fails
the attempt as `protocol` with a short message; a body, line or event over the target's
`ResponseLimits` ends the attempt at once (memory stays bounded, work stays linear); after the
stream's end marker (or a failure) the rest of the body gets `END_GRACE_S` to arrive, so a reply
kept open after `[DONE]` is complete, not a timeout. A kept-alive connection that the server
closed before it answered a single byte (llama.cpp's server closes after every stream; the
close can cross the next request on the wire) is replaced and the request sent once more: the
server never took it, so this is still one attempt, started at the resend, with `reconnects`.

The caller bounds each attempt (`PairLoad.send`: `move_on_after(request_timeout_s)`, the same
`timeout_s` the provider is given); requests on real sockets carry no per-read timeouts of their
own, which could never fire first (docs/accuracy.md, "The hot path").
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from contextlib import aclosing
from time import perf_counter_ns
from typing import Any, ClassVar, cast

import httpcore
import httpx
import trio

from schemas.config import strip_userinfo
from stages.execute.client.framing import Framer, NdjsonFramer, SseFramer
from stages.execute.client.providers.base import (
    Attempt,
    ProtocolViolation,
    ProviderSettings,
    RequestSpec,
)
from stages.execute.client.taxonomy import error_type_for_status, parse_retry_after, scrub
from stages.execute.client.template import ContentTemplate
from stages.execute.client.transport.backend import arrival_ns, sent_ns
from stages.execute.client.transport.lanes import ClientLanes, Lane, core_request

__all__ = ["END_GRACE_S", "HttpProvider", "StreamState"]

END_GRACE_S = 0.25
"""After the end marker (or a failure) the rest of a body may take this long to arrive."""
_ERROR_BODY_LIMIT = 4096
_OFF_LOOP_JSON = 1 << 20
"""A whole body larger than this is parsed in a thread, so the loop keeps stamping the others."""
_BODY_CACHE = 4096
"""Distinct request bodies kept serialised (a prompts file can be large; past this, rebuilt)."""
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")
_TIMEOUTS = (httpcore.TimeoutException,)
_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)
_NOT_ANSWERED = (httpcore.RemoteProtocolError, httpcore.NetworkError)
"""How a kept-alive connection the server had closed fails a request (EOF before the status
line: "Server disconnected without sending a response", or a reset)."""
_GARBAGE = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)
"""What parsing a reply nobody expected can raise (`ProtocolViolation` is a ValueError): the
attempt fails as `protocol`, the run goes on."""


def _transport_failure(exc: BaseException) -> str:
    """`Type: message` of a transport failure, with the operating system's reasons when they sit
    below it: trio says only "all attempts to connect to HOST:PORT failed" and keeps each
    attempt's error (connection refused, network unreachable) in an exception group it chains."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, BaseExceptionGroup):
            reasons = [
                os.strerror(e.errno) if e.errno else str(e)
                for e in cause.exceptions
                if isinstance(e, OSError)
            ]
            return f"{text}: {', '.join(dict.fromkeys(reasons))}" if reasons else text
        cause = cause.__cause__
    return text


class _Reply:
    """What the reading code needs of httpcore's response: the status, httpx's headers (their
    case-insensitive lookup), the body's reads and when each arrived."""

    __slots__ = ("_extensions", "headers", "network", "reads", "status")

    def __init__(
        self,
        status: int,
        headers: httpx.Headers,
        reads: AsyncGenerator[bytes, None],
        extensions: Mapping[str, Any],
    ) -> None:
        self.status = status
        self.headers = headers
        self.reads = reads
        self._extensions = extensions
        self.network = extensions.get("network_stream")

    def arrived_ns(self) -> int:
        """When the bytes of the last read arrived (see `stages/net/arrival.py`); now, for a
        network stream that is not the lean backend's (none is today: a guard, not a path)."""
        arrived = arrival_ns(self.network)
        return perf_counter_ns() if arrived is None else arrived

    @property
    def reason_phrase(self) -> str:
        """As `httpx.Response.reason_phrase` says it."""
        reason = self._extensions.get("reason_phrase", b"")
        return reason.decode("ascii", errors="ignore") or httpx.codes.get_reason_phrase(self.status)

    @classmethod
    def of_core(cls, response: httpcore.Response) -> _Reply:
        stream = cast(AsyncIterable[bytes], response.stream)  # an async pool's always is
        reads = cast(AsyncGenerator[bytes, None], aiter(stream))  # it is one
        return cls(response.status, httpx.Headers(response.headers), reads, response.extensions)


class StreamState:
    """Per-attempt parsing state of one streamed response; subclasses add what they track."""

    __slots__ = ("done", "template")

    def __init__(self) -> None:
        self.done = False
        """The stream's own end marker was seen ([DONE], message_stop, done: true)."""
        self.template: ContentTemplate | None = None
        """The envelope of the last plain content chunk: the next ones skip `json.loads`."""

    def known_content(self, payload: bytes, now_ns: int, attempt: Attempt) -> bool:
        """Record a content chunk in the learned envelope without parsing it; False if it is not."""
        template = self.template
        if template is None:
            return False
        chars = template.match(payload)
        if chars < 0:
            return False
        attempt.chunk_ns.append(now_ns)
        attempt.text_chars += chars
        return True


def _basic_auth(base_url: str) -> tuple[str, ...]:
    """`user:password@` of a base URL as a basic-auth header value and the secrets in it."""
    url = httpx.URL(base_url)
    if not url.username and not url.password:
        return ()
    pair = f"{url.username}:{url.password}"
    token = base64.b64encode(pair.encode()).decode()
    return tuple(s for s in (f"Basic {token}", token, url.password, pair) if s)


class HttpProvider:
    """A provider speaking JSON over HTTP with a streamed (SSE or NDJSON) or whole response."""

    kind: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    path: ClassVar[str] = ""
    ndjson: ClassVar[bool] = False
    end_marker: ClassVar[str] = "its end marker"

    def __init__(self, settings: ProviderSettings) -> None:
        target = settings.target
        self.target = target
        self.model = target.model
        self.limits = target.limits
        base_url = target.base_url or self.default_base_url
        basic = _basic_auth(base_url)
        self._secrets: tuple[str, ...] = (*settings.secrets, *basic)
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **({"authorization": basic[0]} if basic else {}),
            **self.auth_headers(settings.api_key),
            **target.headers,
            **settings.secret_headers,
        }
        self.lanes = ClientLanes(
            base_url=strip_userinfo(base_url),
            headers=headers,
            timeout_s=settings.timeout_s,
        )
        self._url = self.lanes.url(self.path)
        self._bodies: dict[
            tuple[str, str | None, int, bool, bool, str | None], tuple[bytes, httpcore.Request]
        ] = {}

    # -- what a subclass says -----------------------------------------------------------------

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def body(self, spec: RequestSpec) -> dict[str, Any]:
        raise NotImplementedError

    def new_state(self) -> StreamState:
        return StreamState()

    def on_payload(self, payload: bytes, now_ns: int, state: Any, attempt: Attempt) -> bool:
        """Read one streamed payload; return True to stop reading (end marker or a failure).
        May raise `ProtocolViolation` (or anything in `_GARBAGE`) for a reply out of shape."""
        raise NotImplementedError

    def on_stream_end(self, state: Any, attempt: Attempt) -> None:
        """Called after the stream ended (a failure recorded first stays the one recorded)."""
        if not state.done:
            self.fail(attempt, "protocol", f"stream ended before {self.end_marker}")

    def on_body(self, body: Any, attempt: Attempt) -> None:
        """Read a whole non-streamed JSON response (may raise as `on_payload` may)."""
        raise NotImplementedError

    def error_detail(self, body: Any) -> str | None:
        """The message inside a provider's JSON error shape, if there is one."""
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                message = err.get("message") or err.get("type")
                return str(message) if message else None
            if isinstance(err, str):
                return err
            if isinstance(body.get("message"), str):
                return str(body["message"])
        return None

    # -- the attempt ----------------------------------------------------------------------------

    def fail(self, attempt: Attempt, error_type: str, message: str) -> None:
        attempt.fail(error_type, message, self._secrets)

    def malformed(self, attempt: Attempt, exc: BaseException) -> None:
        """The reply broke its format (see `_GARBAGE`): a protocol error saying how."""
        if isinstance(exc, ProtocolViolation):
            self.fail(attempt, "protocol", str(exc))
        else:
            self.fail(attempt, "protocol", f"malformed reply ({type(exc).__name__}: {exc})")

    def _prepared(self, spec: RequestSpec) -> tuple[bytes, httpcore.Request]:
        """The request body, serialised once per distinct prompt (the body ignores the index),
        and the httpcore request carrying it, built once too (httpx builds it per request)."""
        key = (
            spec.prompt,
            spec.system_prompt,
            spec.max_tokens,
            spec.stream,
            spec.tools,
            spec.tool_choice,
        )
        prepared = self._bodies.get(key)
        if prepared is None:
            content = json.dumps(self.body(spec), separators=(",", ":")).encode()
            request = self.lanes.client.build_request("POST", self._url, content=content)
            prepared = (content, core_request(request))
            if len(self._bodies) < _BODY_CACHE:
                self._bodies[key] = prepared
        return prepared

    async def send(self, spec: RequestSpec, attempt: Attempt) -> None:
        content, request = self._prepared(spec)
        attempt.bytes_sent = len(content)
        lane = self.lanes.acquire()
        try:
            await self._send(lane, request, spec, attempt)
        finally:
            self.lanes.release(lane)

    async def _open(
        self, lane: Lane, request: httpcore.Request, attempt: Attempt
    ) -> httpcore.Response:
        """Send on the lane; once more on a new connection if the kept-alive one had been
        closed by the server before it answered anything (it never took the request)."""
        attempt.start_ns = perf_counter_ns()
        try:
            return await lane.request(request)
        except _NOT_ANSWERED:
            if not lane.answered_nothing():
                raise
        attempt.reconnects += 1
        await lane.drop()
        attempt.start_ns = perf_counter_ns()
        return await lane.request(request)

    async def _send(
        self, lane: Lane, request: httpcore.Request, spec: RequestSpec, attempt: Attempt
    ) -> None:
        got_headers = False
        try:
            core = await self._open(lane, request, attempt)
            got_headers = True
            reply = _Reply.of_core(core)
            written = None if lane.opened else sent_ns(reply.network)
            if written is not None and written > attempt.start_ns:
                attempt.start_ns = written
            try:
                await self._read(reply, spec, attempt)
            finally:
                await core.aclose()
        except _TIMEOUTS as exc:
            self.fail(
                attempt,
                "timeout",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        except _TRANSPORT_ERRORS as exc:
            # Bytes came back, but not a response: the server answered something that is not
            # HTTP (garbage, endless headers). Nothing came back: the connection failed.
            answered = got_headers or lane.answered() > 0
            self.fail(attempt, "protocol" if answered else "connection", _transport_failure(exc))
        finally:
            if not attempt.end_ns:
                attempt.end_ns = perf_counter_ns()

    async def _read(self, response: _Reply, spec: RequestSpec, attempt: Attempt) -> None:
        status = response.status
        attempt.http_status = status
        headers = response.headers
        for name in _REQUEST_ID_HEADERS:
            value = headers.get(name)
            if value:
                attempt.server_request_id = scrub(value, self._secrets)[:128]
                break
        if status >= 400:
            await self._read_error(response, attempt)
            return
        if status >= 300:
            self.fail(attempt, "client_error", f"HTTP {status}: unexpected redirect")
            return
        if spec.stream:
            await self._read_stream(response, attempt)
        else:
            await self._read_whole(response, attempt)

    def _too_large(self, attempt: Attempt) -> bool:
        """Past the target's response limit: fail the attempt (the caller stops reading)."""
        limit = self.limits.max_response_bytes
        if attempt.bytes_received <= limit:
            return False
        self.fail(attempt, "protocol", f"response larger than max_response_bytes ({limit})")
        return True

    async def _read_error(self, response: _Reply, attempt: Attempt) -> None:
        status = response.status
        headers = response.headers
        attempt.retry_after_s = parse_retry_after(
            headers.get("retry-after"), headers.get("retry-after-ms")
        )
        raw = b""
        limit = self.limits.max_response_bytes
        with trio.CancelScope() as enough:
            async with aclosing(response.reads) as reads:
                async for data in reads:
                    attempt.bytes_received += len(data)
                    if len(raw) < _ERROR_BODY_LIMIT:
                        raw += data[: _ERROR_BODY_LIMIT - len(raw)]
                    if attempt.bytes_received > limit:
                        enough.cancel()  # the status says it all: not the rest of an endless body
        attempt.end_ns = response.arrived_ns()
        detail: str | None
        try:
            detail = self.error_detail(json.loads(raw))
        except _GARBAGE:
            detail = raw.decode("utf-8", "replace").strip() or None
        reason = response.reason_phrase or ""
        message = f"HTTP {status} {reason}".rstrip() + (f": {detail}" if detail else "")
        self.fail(attempt, error_type_for_status(status), message)

    async def _read_stream(self, response: _Reply, attempt: Attempt) -> None:
        limits = self.limits
        framer: Framer = (
            NdjsonFramer(limits.max_line_bytes)
            if self.ndjson
            else SseFramer(limits.max_line_bytes, limits.max_event_bytes)
        )
        state = self.new_state()
        on_payload = self.on_payload
        stopped = False
        arrived_ns = response.arrived_ns
        # Read to the end even after the end marker or a failure (latency is to the last byte),
        # but only for END_GRACE_S more: a server may keep the body open after `[DONE]`. Reading
        # stops by cancelling the next read, not by leaving the loop: the cancellation then goes
        # through httpcore's body generators, which close the connection and themselves.
        with trio.CancelScope() as rest:
            async with aclosing(response.reads) as reads:
                async for data in reads:
                    now = arrived_ns()
                    attempt.bytes_received += len(data)
                    if self._too_large(attempt):
                        stopped = True
                        rest.cancel()
                    if stopped:
                        continue
                    try:
                        for payload in framer.feed(data):
                            if on_payload(payload, now, state, attempt):
                                stopped = True
                                break
                    except _GARBAGE as exc:
                        self.malformed(attempt, exc)
                        stopped = True
                    if stopped:
                        rest.deadline = trio.current_time() + END_GRACE_S
        now = attempt.end_ns = arrived_ns()
        if not stopped:
            try:
                for payload in framer.close():
                    if on_payload(payload, now, state, attempt):
                        break
            except _GARBAGE as exc:
                self.malformed(attempt, exc)
        self.on_stream_end(state, attempt)

    async def _read_whole(self, response: _Reply, attempt: Attempt) -> None:
        parts: list[bytes] = []
        with trio.CancelScope() as enough:
            async with aclosing(response.reads) as reads:
                async for data in reads:
                    attempt.bytes_received += len(data)
                    if self._too_large(attempt):
                        enough.cancel()
                    elif attempt.ok:
                        parts.append(data)
        now = attempt.end_ns = response.arrived_ns()
        if not attempt.ok:
            return
        raw = b"".join(parts)
        del parts
        try:
            if len(raw) > _OFF_LOOP_JSON:
                body = await trio.to_thread.run_sync(json.loads, raw)
            else:
                body = json.loads(raw)
        except _GARBAGE:
            self.fail(attempt, "protocol", "response body is not valid JSON")
            return
        if not isinstance(body, dict):
            self.fail(attempt, "protocol", "response body is not a JSON object")
            return
        try:
            self.on_body(body, attempt)
        except _GARBAGE as exc:
            self.malformed(attempt, exc)
        if attempt.ok:
            attempt.chunk_ns.append(now)  # a whole body is one chunk: its TTFT is its latency

    async def aclose(self) -> None:
        await self.lanes.aclose()

    # -- helpers for subclasses ------------------------------------------------------------------

    def loads(self, payload: bytes, attempt: Attempt) -> dict[str, Any] | None:
        """Parse one payload as a JSON object; a malformed one fails the attempt (protocol)."""
        try:
            obj = json.loads(payload)
        except _GARBAGE:
            # Scrubbed whole, then cut (`scrub` cuts): a key cut in half would escape scrubbing.
            text = payload[:4096].decode("utf-8", "replace")
            self.fail(attempt, "protocol", f"malformed JSON in stream: {text}")
            return None
        if not isinstance(obj, dict):
            self.fail(attempt, "protocol", "stream payload is not a JSON object")
            return None
        return obj

    def loads_unless_error(self, payload: bytes, attempt: Attempt) -> dict[str, Any] | None:
        """`loads`, and an `error` object in the stream (OpenAI, Ollama) fails the attempt."""
        obj = self.loads(payload, attempt)
        if obj is not None and obj.get("error"):
            self.fail(attempt, "server_error", f"error in stream: {self.error_detail(obj)}")
            return None
        return obj
