"""One client connection of the mock server: HTTP/1.1 framing (h11's), limits, and its end.

Why this is kept apart from routing: what a connection must survive is independent of what is
asked on it. A body too large, a client that floods or vanishes mid-response, a pipelined request
arriving early, an idle keep-alive: each is handled here so that the server above only ever sees
whole requests and only ever sends whole events. h11 is a sans-I/O parser, so this module is the
only place that touches the socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from http import HTTPStatus
from time import perf_counter_ns

import h11
import trio

from stages.execute.arrival import arrival_clock, is_plain_socket, receive
from stages.execute.mock_wire import BadRequest

__all__ = ["Connection", "Headers", "Request", "response"]

_MAX_BODY = 8 * 1024 * 1024
_MAX_HEADER = 64 * 1024
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


@dataclass(slots=True)
class Request:
    method: str
    path: str
    """Without the query string."""
    headers: dict[str, str]
    body: bytes
    arrived_ns: int
    """`perf_counter_ns` when its last bytes arrived (`stages/execute/arrival.py`)."""


class Connection:
    """One client connection: reads requests, sends responses, notices the client leaving."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER)
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
            if self._raw:
                data, self.arrived_ns = await receive(self.stream.socket, _READ_SIZE, self._clock)
            else:
                data = await self.stream.receive_some(_READ_SIZE)
                self.arrived_ns = perf_counter_ns()
            self.h11.receive_data(data)

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed or stayed idle too long."""
        self.arrived_ns = 0
        with trio.move_on_after(_IDLE_TIMEOUT_S):
            event = await self._next_event()
            if not isinstance(event, h11.Request):
                return None
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > _MAX_BODY:
                raise BadRequest("request body too large", None, 413)
            if self.h11.client_is_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            body = bytearray()
            while True:
                part = await self._next_event()
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > _MAX_BODY:
                        raise BadRequest("request body too large", None, 413)
                elif isinstance(part, h11.EndOfMessage):
                    target = event.target.decode("latin-1").split("?", 1)[0]
                    method = event.method.decode("latin-1")
                    # Read with an earlier request (pipelined): it arrives when its turn comes.
                    arrived = self.arrived_ns or perf_counter_ns()
                    return Request(method, target, headers, bytes(body), arrived)
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
        """Whether another request may follow on this connection (and if so, get ready for it)."""
        if self.peer_gone or self.must_close:
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False
