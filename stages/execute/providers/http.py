"""The HTTP attempt shared by every wire-format provider: send, time, frame, classify.

A subclass says only what differs per API: the path, the headers, the body, and how to read one
payload (an SSE event or an NDJSON line) or a whole non-streamed body. Everything about time and
failure is here, once: `start_ns` is when the request's first bytes were written on a kept-alive
connection (`sent_ns`: the awaits httpcore passes through before writing can queue this task
behind others, and that is the client's time, not the server's), or just before a new connection
was opened (connecting and TLS are part of what that request waited for); each network read is
stamped with when its bytes arrived (`stages/execute/arrival.py`: not when this task got round
to them); and every transport or protocol failure becomes `Attempt.fail`.
Bodies are read with `aiter_raw` and `accept-encoding: identity`, so `bytes_received` counts what
crossed the wire and no decompression sits between a chunk and its timestamp.

The caller bounds each attempt (`PairLoad.send`: `move_on_after(request_timeout_s)`, the same
`timeout_s` the provider is given); requests on real sockets carry no per-read timeouts of their
own, which could never fire first (docs/accuracy.md, "The hot path").
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from contextlib import aclosing
from time import perf_counter_ns
from typing import Any, ClassVar, cast

import httpcore
import httpx

from stages.execute.framing import Framer, NdjsonFramer, SseFramer
from stages.execute.providers.backend import arrival_ns, sent_ns
from stages.execute.providers.base import Attempt, ProviderSettings, RequestSpec
from stages.execute.providers.lanes import ClientLanes, Lane, core_request
from stages.execute.providers.template import ContentTemplate
from stages.execute.taxonomy import error_type_for_status, parse_retry_after, scrub

__all__ = ["HttpProvider", "StreamState"]

_ERROR_BODY_LIMIT = 4096
_BODY_CACHE = 4096
"""Distinct request bodies kept serialised (a prompts file can be large; past this, rebuilt)."""
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")
_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException)
_TRANSPORT_ERRORS = (
    # httpx maps each of httpcore's to its namesake: the messages are the same either way.
    httpx.TransportError,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


def _raw(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's raw reads; a transport that buffered the body already gives it as one read."""
    if response.is_stream_consumed:
        return _once(response.content)
    return cast(AsyncGenerator[bytes, None], response.aiter_raw())  # it is one


class _Reply:
    """What the reading code needs of a response, from httpx's or from httpcore's."""

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
        """When the bytes of the last read arrived (see `stages/execute/arrival.py`); now, for a
        transport that does not say (tests' `MockTransport`)."""
        arrived = arrival_ns(self.network)
        return perf_counter_ns() if arrived is None else arrived

    @property
    def reason_phrase(self) -> str:
        """As `httpx.Response.reason_phrase` says it."""
        reason = self._extensions.get("reason_phrase", b"")
        return reason.decode("ascii", errors="ignore") or httpx.codes.get_reason_phrase(self.status)

    @classmethod
    def of_httpx(cls, response: httpx.Response) -> _Reply:
        return cls(response.status_code, response.headers, _raw(response), response.extensions)

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
        self._secrets: tuple[str, ...] = (settings.api_key,) if settings.api_key else ()
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **self.auth_headers(settings.api_key),
            **target.headers,
        }
        self.lanes = ClientLanes(
            base_url=target.base_url or self.default_base_url,
            headers=headers,
            timeout_s=settings.timeout_s,
            transport=settings.transport,
        )
        self._url = self.lanes.url(self.path)
        self._bodies: dict[
            tuple[str, str | None, int, bool, bool], tuple[bytes, httpcore.Request]
        ] = {}

    # -- what a subclass says -----------------------------------------------------------------

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def body(self, spec: RequestSpec) -> dict[str, Any]:
        raise NotImplementedError

    def new_state(self) -> StreamState:
        return StreamState()

    def on_payload(self, payload: bytes, now_ns: int, state: Any, attempt: Attempt) -> bool:
        """Read one streamed payload; return True to stop reading (end marker or a failure)."""
        raise NotImplementedError

    def on_stream_end(self, state: Any, attempt: Attempt) -> None:
        """Called after the stream ended (a failure recorded first stays the one recorded)."""
        if not state.done:
            self.fail(attempt, "protocol", f"stream ended before {self.end_marker}")

    def on_body(self, body: Any, attempt: Attempt) -> None:
        """Read a whole non-streamed JSON response."""
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

    def _prepared(self, spec: RequestSpec) -> tuple[bytes, httpcore.Request]:
        """The request body, serialised once per distinct prompt (the body ignores the index),
        and the httpcore request carrying it, built once too (httpx builds it per request)."""
        key = (spec.prompt, spec.system_prompt, spec.max_tokens, spec.stream, spec.tools)
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
            await self._send(lane, content, request, spec, attempt)
        finally:
            self.lanes.release(lane)

    async def _send(
        self,
        lane: Lane,
        content: bytes,
        request: httpcore.Request,
        spec: RequestSpec,
        attempt: Attempt,
    ) -> None:
        got_headers = False
        try:
            if lane.pool is not None:
                attempt.start_ns = perf_counter_ns()
                core = await lane.request(request)
                got_headers = True
                reply = _Reply.of_core(core)
                written = None if lane.opened else sent_ns(reply.network)
                if written is not None and written > attempt.start_ns:
                    attempt.start_ns = written
                try:
                    await self._read(reply, spec, attempt)
                finally:
                    await core.aclose()
            else:
                client = lane.client
                sent = client.build_request("POST", self._url, content=content)
                attempt.start_ns = perf_counter_ns()
                response = await client.send(sent, stream=True)
                got_headers = True
                try:
                    await self._read(_Reply.of_httpx(response), spec, attempt)
                finally:
                    await response.aclose()
        except _TIMEOUTS as exc:
            self.fail(
                attempt,
                "timeout",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        except _TRANSPORT_ERRORS as exc:
            kind = "protocol" if got_headers else "connection"
            self.fail(attempt, kind, f"{type(exc).__name__}: {exc}")
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
                attempt.server_request_id = scrub(value[:128], self._secrets)
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

    async def _read_error(self, response: _Reply, attempt: Attempt) -> None:
        status = response.status
        headers = response.headers
        attempt.retry_after_s = parse_retry_after(
            headers.get("retry-after"), headers.get("retry-after-ms")
        )
        raw = b""
        async with aclosing(response.reads) as reads:
            async for data in reads:
                attempt.bytes_received += len(data)
                if len(raw) < _ERROR_BODY_LIMIT:
                    raw += data[: _ERROR_BODY_LIMIT - len(raw)]
        attempt.end_ns = perf_counter_ns()
        detail: str | None
        try:
            detail = self.error_detail(json.loads(raw))
        except ValueError:
            detail = raw.decode("utf-8", "replace").strip() or None
        reason = response.reason_phrase or ""
        message = f"HTTP {status} {reason}".rstrip() + (f": {detail}" if detail else "")
        self.fail(attempt, error_type_for_status(status), message)

    async def _read_stream(self, response: _Reply, attempt: Attempt) -> None:
        framer: Framer = NdjsonFramer() if self.ndjson else SseFramer()
        state = self.new_state()
        on_payload = self.on_payload
        stopped = False
        arrived_ns = response.arrived_ns
        async with aclosing(response.reads) as reads:
            # Read to the end even after the end marker or a failure: latency is to the last
            # byte, and an abandoned httpx stream iterator would only be finalised by the GC.
            async for data in reads:
                now = arrived_ns()
                attempt.bytes_received += len(data)
                if stopped:
                    continue
                for payload in framer.feed(data):
                    if on_payload(payload, now, state, attempt):
                        stopped = True
                        break
        now = attempt.end_ns = arrived_ns()
        if not stopped:
            for payload in framer.close():
                if on_payload(payload, now, state, attempt):
                    break
        self.on_stream_end(state, attempt)

    async def _read_whole(self, response: _Reply, attempt: Attempt) -> None:
        parts: list[bytes] = []
        async with aclosing(response.reads) as reads:
            async for data in reads:
                attempt.bytes_received += len(data)
                parts.append(data)
        now = attempt.end_ns = response.arrived_ns()
        try:
            body = json.loads(b"".join(parts))
        except ValueError:
            self.fail(attempt, "protocol", "response body is not valid JSON")
            return
        if not isinstance(body, dict):
            self.fail(attempt, "protocol", "response body is not a JSON object")
            return
        self.on_body(body, attempt)
        if attempt.ok:
            attempt.chunk_ns.append(now)  # a whole body is one chunk: its TTFT is its latency

    async def aclose(self) -> None:
        await self.lanes.aclose()

    # -- helpers for subclasses ------------------------------------------------------------------

    def loads(self, payload: bytes, attempt: Attempt) -> dict[str, Any] | None:
        """Parse one payload as a JSON object; a malformed one fails the attempt (protocol)."""
        try:
            obj = json.loads(payload)
        except ValueError:
            self.fail(attempt, "protocol", f"malformed JSON in stream: {payload[:60]!r}")
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
