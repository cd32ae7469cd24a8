"""One client connection of the mock server: HTTP/1.1 framing (h11's), limits, and its end.

Why this is kept apart from routing: what a connection must survive is independent of what is
asked on it. A body too large, a client that floods or vanishes mid-response, a pipelined request
arriving early, an idle keep-alive: each is handled here so that the server above only ever sees
whole requests and only ever sends whole events. h11 is a sans-I/O parser, so this module is the
only place that touches the socket.

Limits: a body of at most 8 MiB (413); a header block of at most 64 KiB and 100 fields (431),
checked on the parsed head too, since h11's own limit only applies while a head is incomplete;
and one `BodyBudget` shared by every connection, so that all the request bytes the server holds
at once (bodies being read or served, bytes a client sends during its response) stay under
64 MiB whatever the number of clients: past it a request is refused with 503 before its body is
read, as a loaded server sheds load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from http import HTTPStatus
from time import perf_counter_ns

import h11
import trio

from stages.mock.wire.base import BadRequest
from stages.net.arrival import arrival_clock, is_plain_socket, receive

__all__ = [
    "MAX_BODY",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "MAX_HELD_BYTES",
    "BodyBudget",
    "Connection",
    "Headers",
    "Request",
    "ServerBusy",
    "response",
]

MAX_BODY = 8 * 1024 * 1024
"""One request's body (413 past it)."""
MAX_HEADER_BYTES = 64 * 1024
"""One request's head: request line and header fields (431 past it)."""
MAX_HEADER_FIELDS = 100
"""Header fields of one request (431 past it): SDKs send ~15; Apache's default limit is 100."""
MAX_HELD_BYTES = 64 * 1024 * 1024
"""Request bytes held by the whole server at once (503 past it)."""
_READ_SIZE = 65536
_LINGER_S = 1.0
_IDLE_TIMEOUT_S = 120.0
"""A keep-alive connection with no new request for this long is closed (clients use ~5-90 s)."""

Headers = list[tuple[str, str]]


def response(status: int, headers: Headers) -> h11.Response:
    """A response head with the standard reason phrase (and Anthropic's 529 `Overloaded`)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else ""
    return h11.Response(status_code=status, headers=headers, reason=reason)


class ServerBusy(BadRequest):
    """The server holds as many request bytes as it may (`BodyBudget`): answered 503, retryable."""

    def __init__(self) -> None:
        super().__init__(
            "The mock server is holding too much request data at once; retry later.", None, 503
        )


class BodyBudget:
    """Bytes of request data held across all connections, up to `limit`.

    A connection takes from it before it holds bytes (a body's declared length up front, or each
    chunk of a chunked body, or what a client sends during its response) and gives all of it
    back when the request is done, so the sum is what the server holds for its clients.
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int = MAX_HELD_BYTES) -> None:
        self.limit = limit
        self.held = 0

    def take(self, nbytes: int) -> bool:
        if self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.held -= nbytes


def _head_size(event: h11.Request) -> int:
    """Bytes of a request head as sent: request line, then `name: value\\r\\n` per field."""
    line = len(event.method) + len(event.target) + 12  # spaces, "HTTP/1.1", CRLF
    return line + sum(len(k) + len(v) + 4 for k, v in event.headers) + 2


@dataclass(slots=True)
class Request:
    method: str
    path: str
    """Without the query string."""
    headers: dict[str, str]
    body: bytes
    arrived_ns: int
    """`perf_counter_ns` when its last bytes arrived (`stages/net/arrival.py`)."""


class Connection:
    """One client connection: reads requests, sends responses, notices the client leaving."""

    def __init__(self, stream: trio.SocketStream, budget: BodyBudget | None = None) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.budget = budget or BodyBudget()
        self.held = 0
        """Bytes this connection has taken from the budget (given back by `release`)."""
        self.path = ""
        """The path of the request being read or served (whose error shape a refusal takes)."""
        self.peer_gone = False
        self.must_close = False
        self._clock = arrival_clock()
        self._raw = is_plain_socket(stream)
        """A POSIX socket: read and written directly where that saves a loop turn."""
        self.arrived_ns = 0
        """When the bytes of the last read for the request being read arrived (0: none yet)."""

    async def send(self, *events: h11.Event) -> None:
        """Send events in one write: a response's last bytes and its end must arrive together,
        or a client that stops reading at `[DONE]` finds the connection unfinished and drops it."""
        data = b"".join(self.h11.send(event) or b"" for event in events)
        if data and self._raw:
            # Written at once when the socket takes it all (a token is small): `send_all` would
            # then yield, and 16 streams due at the same instant would go out one loop turn
            # apart, each later than its deadline.
            try:
                data = data[os.write(self.stream.socket.fileno(), data) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc
        if data:
            await self.stream.send_all(data)

    async def linger(self) -> None:
        """Close politely after an error: stop sending, then drain what the client still sends,
        so the kernel does not answer its unread bytes with a reset that destroys our reply."""
        with trio.move_on_after(_LINGER_S):
            await self.stream.send_eof()
            drained = 0
            while drained < MAX_BODY:
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
            if self._raw:
                data, self.arrived_ns = await receive(self.stream.socket, _READ_SIZE, self._clock)
            else:
                data = await self.stream.receive_some(_READ_SIZE)
                self.arrived_ns = perf_counter_ns()
            self.h11.receive_data(data)

    def _hold(self, nbytes: int) -> None:
        """Take `nbytes` from the server's budget for this request, or refuse it (503)."""
        if not self.budget.take(nbytes):
            raise ServerBusy()
        self.held += nbytes

    def release(self) -> None:
        """Give back what this connection took from the budget (its request is done)."""
        self.budget.give(self.held)
        self.held = 0

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed or stayed idle too long.

        Raises BadRequest for a head too large (431) or a body too large (413), and ServerBusy
        (503) when the server already holds `MAX_HELD_BYTES`; `path` names the request then.
        """
        self.arrived_ns = 0
        self.path = ""
        with trio.move_on_after(_IDLE_TIMEOUT_S):
            event = await self._next_event()
            if not isinstance(event, h11.Request):
                return None
            self.path = event.target.decode("latin-1").split("?", 1)[0]
            if len(event.headers) > MAX_HEADER_FIELDS:
                raise BadRequest(f"more than {MAX_HEADER_FIELDS} header fields", None, 431)
            if _head_size(event) > MAX_HEADER_BYTES:
                raise BadRequest("request header fields too large", None, 431)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            length = headers.get("content-length")
            if length is not None and length.isdigit():
                if int(length) > MAX_BODY:
                    raise BadRequest("request body too large", None, 413)
                self._hold(int(length))  # before reading it: a refused body is never held
            if self.h11.client_is_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            parts: list[bytes] = []
            size = 0
            while True:
                part = await self._next_event()
                if isinstance(part, h11.Data):
                    size += len(part.data)
                    if size > MAX_BODY:
                        raise BadRequest("request body too large", None, 413)
                    if length is None:  # chunked: held as it arrives
                        self._hold(len(part.data))
                    parts.append(part.data)
                elif isinstance(part, h11.EndOfMessage):
                    method = event.method.decode("latin-1")
                    # Read with an earlier request (pipelined): it arrives when its turn comes.
                    arrived = self.arrived_ns or perf_counter_ns()
                    body = b"".join(parts)
                    parts.clear()
                    return Request(method, self.path, headers, body, arrived)
                else:
                    return None
        return None

    async def watch_peer(self, scope: trio.CancelScope) -> None:
        """Cancel `scope` when the client closes the connection (or floods it) mid-response.

        What it sends meanwhile (a pipelined next request) is kept for its turn, counted in the
        server's budget; a client that sends more than the budget allows is taken as flooding.
        """
        received = 0
        while True:
            try:
                data = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            received += len(data)
            if not data or received > MAX_BODY or not self.budget.take(len(data)):
                self.peer_gone = True
                scope.cancel()
                return
            self.held += len(data)
            self.h11.receive_data(data)

    def reusable(self) -> bool:
        """Whether another request may follow on this connection (and if so, get ready for it)."""
        if self.peer_gone or self.must_close:
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False
