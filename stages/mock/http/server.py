"""An HTTP mock of OpenAI, Anthropic and Ollama that injects the faults real providers produce.

Why a server when there is an in-process mock: the real provider clients (and other tools such
as guidellm, aiperf, vLLM's `bench serve`) only meet the network. This server speaks each wire
protocol closely enough for the official SDKs: OpenAI `POST /v1/chat/completions` (SSE
`chat.completion.chunk`s, the usage chunk of `stream_options.include_usage`, `[DONE]`), Anthropic
`POST /v1/messages` (its SSE event sequence), Ollama `POST /api/chat` (NDJSON), each with tool
calls when the request offers tools, plus `GET /v1/models`, `GET /api/tags` and `GET /health`.

Every response follows a `ResponsePlan` from `stages.mock.sim`, the same model as the in-process
provider, replayed by absolute deadlines (`trio.sleep_until(t0 + offset)`) so a loaded server
does not drift. Injected failures look like the provider's own: 429 with `retry-after` and the
provider's error JSON, 500, 503 (Anthropic: 529 overloaded_error), a hang that sends nothing,
a stream cut without its end (the connection is closed mid-body, so HTTP clients raise), and a
chunk that is not JSON. A request the provider would refuse gets a 400 in its error shape.

Robustness: every connection runs in its own task and any failure in it ends that connection
only; a client that goes away mid-response is noticed (a task watches the socket for EOF) and
its request is dropped, freeing its concurrency slot. Keep-alive works as the SDKs expect.

This module routes requests and replays plans. The wire formats are `stages.mock.wire.openai`,
`.anthropic` and `.ollama` (on what they share, `.base`); HTTP/1.1 framing is h11's, driven by
`connection`.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Any

import h11
import trio

from schemas.scenario import MockConfiguration
from stages.mock.http.connection import (
    BodyBudget,
    Connection,
    Headers,
    Request,
    ServerBusy,
    response,
)
from stages.mock.sim import (
    STATUS_ERRORS,
    ConcurrencyGate,
    MockSimulator,
    ResponsePlan,
    TokenClock,
    hold_memory,
)
from stages.mock.wire.anthropic import ANTHROPIC
from stages.mock.wire.base import JSON, BadRequest, Chat, Encoder, Provider, dumps, new_id
from stages.mock.wire.ollama import OLLAMA
from stages.mock.wire.openai import OPENAI, mimic_openai_server

__all__ = ["REQUEST_INDEX_HEADER", "MockServer", "run_server", "serve"]

REQUEST_INDEX_HEADER = "x-mock-request-index"
"""Optional request header pinning the plan index, for runs that must be reproducible under
concurrency (without it, requests are numbered in order of arrival)."""

_MODELS = ("mock-small", "mock-large")
_MESSAGES = {
    "rate_limit": "Rate limit reached for requests (mock). Please try again in {retry}.",
    "server_error": "The server had an error while processing your request (mock).",
    "unavailable": "The server is overloaded or not ready yet (mock).",
    "overload": "Too many concurrent requests (mock concurrency limit {limit}).",
}
_GENERATE = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC, "/api/chat": OLLAMA}
_LISTINGS = {"/v1/models", "/api/tags", "/health"}


def _provider_for(path: str) -> Provider:
    """Whose error shape a request gets, even one for a path that does not exist."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/api/"):
        return OLLAMA
    return OPENAI


@dataclass(slots=True)
class _Outcome:
    """What the request log line reports about one request."""

    status: int = 0
    index: int | None = None
    note: str = ""


class MockServer:
    """The mock's HTTP front end: routes requests to a shared `MockSimulator` and gate."""

    def __init__(self, config: MockConfiguration, log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.simulator = MockSimulator(config)
        self.gate = ConcurrencyGate.from_config(config)
        self.budget = BodyBudget()
        """Request bytes held across all connections (503 past `MAX_HELD_BYTES`)."""
        self.log = log
        self.requests = 0
        """Generation requests numbered so far (the next request's index)."""
        self.connections = 0
        """Connections accepted so far (keep-alive reuse shows as fewer connections)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection until it closes; nothing it sends can escape this function."""
        conn = Connection(stream, self.budget)
        self.connections += 1
        try:
            while True:
                try:
                    request = await conn.read_request()
                except (BadRequest, h11.RemoteProtocolError) as exc:
                    await self._refuse(conn, exc)
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
            conn.release()
            await trio.aclose_forcefully(stream)

    async def _refuse(self, conn: Connection, exc: BadRequest | h11.RemoteProtocolError) -> None:
        """Answer a request that could not be read (too large, not HTTP, server full), then
        close without a reset that would swallow the answer."""
        conn.must_close = True
        conn.release()  # a refused body is not kept
        if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        # The path is known once the head was read; before that (not HTTP) OpenAI's shape.
        provider = _provider_for(conn.path)
        headers: Headers = []
        if isinstance(exc, ServerBusy):
            status, msg = provider.unavailable_status, exc.message
            headers.append(("retry-after", "1"))
        elif isinstance(exc, BadRequest):
            status, msg = exc.status, exc.message
        else:
            status, msg = exc.error_status_hint, f"malformed HTTP request: {exc}"
        await self._error(conn, provider, status, msg, None, _Outcome(), headers)
        if self.log is not None:
            self.log(f"- {conn.path or '-'} {status} {msg}")
        await conn.linger()

    async def _serve_request(self, conn: Connection, request: Request) -> None:
        started = time.perf_counter()
        outcome = _Outcome()
        provider = _provider_for(request.path)

        async def respond() -> None:
            try:
                await self._route(conn, request, provider, outcome)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.peer_gone = True
            except BadRequest as exc:
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

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.watch_peer, nursery.cancel_scope)
                nursery.start_soon(respond)
        finally:
            # In `finally`: a shutdown that begins right after the response went out cancels
            # the nursery's exit, and the request it served must still get its line.
            conn.release()
            self._log_request(request, outcome, conn.peer_gone, started)

    def _log_request(
        self, request: Request, outcome: _Outcome, peer_gone: bool, started: float
    ) -> None:
        if peer_gone and not outcome.note:
            outcome.note = "client went away"
        if self.log is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            index = f" #{outcome.index}" if outcome.index is not None else ""
            note = f" {outcome.note}" if outcome.note else ""
            status = outcome.status or "-"
            self.log(f"{request.method} {request.path} {status} {elapsed_ms:.1f}ms{index}{note}")

    async def _route(
        self, conn: Connection, request: Request, provider: Provider, outcome: _Outcome
    ) -> None:
        method, path = request.method, request.path
        if path in _GENERATE:
            if method != "POST":
                raise BadRequest(f"{method} is not allowed on {path}; use POST", None, 405)
            await self._generate(conn, request, _GENERATE[path], outcome)
        elif path in _LISTINGS:
            if method != "GET":
                raise BadRequest(f"{method} is not allowed on {path}; use GET", None, 405)
            await self._listing(conn, request, outcome)
        else:
            raise BadRequest(f"Unknown request URL: {method} {path}", None, 404)

    async def _listing(self, conn: Connection, request: Request, outcome: _Outcome) -> None:
        payload: dict[str, Any]
        if request.path == "/health":
            payload = {
                "status": "ok",
                "in_flight": self.gate.in_flight,
                "waiting": self.gate.waiting,
                "requests": self.requests,
                "connections": self.connections,
                "held_bytes": self.budget.held,
            }
        elif request.path == "/api/tags":
            payload = OLLAMA.models(_MODELS)
        elif "anthropic-version" in request.headers:
            # Anthropic and OpenAI share /v1/models; only Anthropic's SDK sends this header.
            payload = ANTHROPIC.models(_MODELS)
        else:
            payload = OPENAI.models(_MODELS)
        await self._send(conn, 200, JSON, dumps(payload).encode(), [], outcome)

    async def _send(
        self,
        conn: Connection,
        status: int,
        content_type: str,
        body: bytes,
        headers: Headers,
        outcome: _Outcome,
    ) -> None:
        outcome.status = status
        all_headers = [("content-type", content_type), ("content-length", str(len(body)))]
        await conn.send(
            response(status, all_headers + headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )

    async def _error(
        self,
        conn: Connection,
        provider: Provider,
        status: int,
        message: str,
        param: str | None,
        outcome: _Outcome,
        headers: Headers | None = None,
    ) -> None:
        rid = new_id("req_")
        extra = list(headers or [])
        if provider.request_id_header is not None:
            extra.append((provider.request_id_header, rid))
        if conn.must_close:
            extra.append(("connection", "close"))
        body = provider.error(status, message, param, rid)
        await self._send(conn, status, JSON, body, extra, outcome)

    def _index_of(self, request: Request) -> int:
        pinned = request.headers.get(REQUEST_INDEX_HEADER)
        if pinned is not None:
            try:
                return int(pinned)
            except ValueError:
                raise BadRequest(f"{REQUEST_INDEX_HEADER} must be an integer") from None
        index = self.requests
        self.requests += 1
        return index

    async def _generate(
        self, conn: Connection, request: Request, provider: Provider, outcome: _Outcome
    ) -> None:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("We could not parse the JSON body of your request.") from None
        except RecursionError:
            raise BadRequest("The JSON body of your request is nested too deeply.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        chat = provider.parse(body)
        if provider is OPENAI:
            mimic_openai_server(chat, body, self.config.mimic)
        # Only the parsed request is needed from here on (its budget is given back when the
        # response ends): the raw body and the JSON tree are not kept while it waits or plays.
        request.body = b""
        del body
        index = self._index_of(request)
        outcome.index = index
        queued = self.gate.in_flight >= self.gate.limit
        async with self.gate.slot() as admitted:
            if not admitted:
                outcome.note = "rejected: over the concurrency limit"
                await self._rate_limited(conn, provider, outcome, overload=True)
                return
            # The plan's clock starts when the request arrived, not after this server parsed it
            # and the others that arrived with it; or, if it waited for a slot, when admitted.
            start_ns = perf_counter_ns() if queued else request.arrived_ns
            plan = self.simulator.plan(index, chat.max_tokens, chat.prompt)
            with hold_memory(self.config.memory_usage_simulation or 0):
                await self._play(conn, provider, chat, plan, outcome, start_ns)

    async def _rate_limited(
        self, conn: Connection, provider: Provider, outcome: _Outcome, *, overload: bool
    ) -> None:
        seconds = self.config.retry_after.total_seconds()
        headers = [("retry-after", str(math.ceil(seconds)))]
        if provider.retry_after_ms:
            headers.append(("retry-after-ms", str(round(seconds * 1000))))
        if overload:
            message = _MESSAGES["overload"].format(limit=self.config.concurrency_limit)
        else:
            message = _MESSAGES["rate_limit"].format(retry=f"{seconds:g}s")
        await self._error(conn, provider, 429, message, None, outcome, headers)

    async def _play(
        self,
        conn: Connection,
        provider: Provider,
        chat: Chat,
        plan: ResponsePlan,
        outcome: _Outcome,
        start_ns: int,
    ) -> None:
        """Replay `plan` on this connection, by absolute deadlines from `start_ns`
        (`perf_counter_ns`), as t0 on trio's clock."""
        t0 = trio.current_time() - (perf_counter_ns() - start_ns) / 1e9
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
        headers = [(REQUEST_INDEX_HEADER, str(outcome.index))]
        if rid_header is not None:
            headers.append((rid_header, new_id("req_")))
        clock = self.gate.clock(plan, t0, self.config.batch_capacity)
        if chat.stream:
            await self._stream(conn, encoder, headers, clock, outcome)
        else:
            await self._whole(conn, encoder, headers, clock, outcome)

    async def _stream(
        self,
        conn: Connection,
        encoder: Encoder,
        headers: Headers,
        clock: TokenClock,
        outcome: _Outcome,
    ) -> None:
        plan = encoder.plan
        offsets = plan.token_offsets_s
        cut = plan.cut_after if plan.error == "cut" else None
        bad = plan.cut_after if plan.error == "malformed" else None
        outcome.status = 200
        head = [("content-type", encoder.stream_type), ("cache-control", "no-cache")]
        llama = self.config.mimic == "llama.cpp"
        if llama:  # as llama.cpp's server (cpp-httplib) answers any stream
            head.append(("keep-alive", "timeout=5, max=100"))
        await conn.send(response(200, head + headers))
        pending = encoder.head()
        if pending:
            await conn.send(h11.Data(data=pending))
        pending = b""
        count = len(offsets)
        for i in range(count):
            await clock.sleep_until_token(i)
            if i == cut:
                if pending:
                    await conn.send(h11.Data(data=pending))
                conn.must_close = True  # the body ends without its last chunk: a cut stream
                return
            pending += encoder.malformed(i) if i == bad else encoder.piece(i)
            # Tokens whose deadlines have already passed go out in one write.
            if i + 1 == count or clock.due(i + 1) > trio.current_time():
                if pending:
                    await conn.send(h11.Data(data=pending))
                pending = b""
        await conn.send(h11.Data(data=encoder.tail()), h11.EndOfMessage())
        if llama:
            conn.must_close = True  # promised keep-alive, closed all the same

    async def _whole(
        self,
        conn: Connection,
        encoder: Encoder,
        headers: Headers,
        clock: TokenClock,
        outcome: _Outcome,
    ) -> None:
        plan = encoder.plan
        body = encoder.body()
        if plan.error == "cut" and plan.cut_after is not None:
            await clock.sleep_until_token(plan.cut_after)
            outcome.status = 200
            head = [("content-type", JSON), ("content-length", str(len(body)))]
            await conn.send(
                response(200, head + headers),
                h11.Data(data=body[: len(body) // 2]),
            )
            conn.must_close = True
            return
        await clock.sleep_until_done()
        if plan.error == "malformed":
            body = body[: len(body) // 2]
        await self._send(conn, 200, JSON, body, headers, outcome)


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
    except (OSError, BaseExceptionGroup) as exc:
        # Binding happens inside a nursery, so its error arrives wrapped in a group: a port in
        # use, an unknown host (gaierror) or a refused address is one OSError with a reason.
        cause = _sole(exc)
        if not isinstance(cause, OSError):
            raise
        reason = cause.strerror or str(cause)
        sys.stderr.write(f"mock-server: cannot listen on {host}:{port}: {reason}\n")
        return 1
    return 0


def _sole(error: BaseException) -> BaseException:
    """The one error inside nested single-member groups (or the group itself if it holds more)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
