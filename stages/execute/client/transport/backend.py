"""httpcore's trio network backend, minus a cancel scope per socket read and write, plus the
time each read's bytes arrived.

httpcore's `TrioStream` wraps every read and write in `trio.fail_after` and an exception-mapping
context manager, even when no timeout is set: two context managers and a cancel scope per socket
operation, ~15% of the client's CPU per request at 64 streams (measured, docs/accuracy.md).
A lane's requests carry no per-operation timeouts (the attempt's own deadline bounds them, see
`HttpProvider`), so this stream reads and writes the trio stream directly and maps the same two
trio errors to the same httpcore errors. With a timeout it defers to httpcore's stream, unchanged.
Connecting (TCP, TLS, Unix sockets) is httpcore's own code.

Every read records `arrival_ns`, when its bytes arrived (`stages/net/arrival.py`): the instant
trio's I/O wait saw them, so a response is not timed late by the other streams' work in the same
loop. Through TLS, the socket under `trio.SSLStream` is stamped the same way and a read takes the
time its records arrived (`start_tls`, as httpcore's does it, over a `_StampedSocket`); a read
with its own timeout, or on a stream that is not a plain socket, when it returned.
"""

from __future__ import annotations

import math
import ssl
import typing
from collections.abc import Iterable
from time import perf_counter_ns

import httpcore
import trio

from stages.net.arrival import ArrivalClock, arrival_clock, is_plain_socket, receive

__all__ = ["LeanTrioBackend", "WireMeter", "arrival_ns", "sent_ns"]

_READ_SIZE = 65536
_Option = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _StampedSocket(trio.abc.HalfCloseableStream):
    """A socket stream whose every read records when its bytes arrived (`arrival_ns`): the
    transport a TLS stream reads its records through, so decrypted bytes keep that time."""

    def __init__(self, stream: trio.SocketStream, clock: ArrivalClock) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._clock = clock
        self.arrival_ns = perf_counter_ns()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data, self.arrival_ns = await receive(self.socket, max_bytes or _READ_SIZE, self._clock)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


class WireMeter:
    """What one connection carried since its current request began to go out, shared by the
    TCP stream and the TLS stream over it: whether a failure came before any byte of an answer
    (the request can be sent again on a new connection: `HttpProvider`)."""

    __slots__ = ("received",)

    def __init__(self) -> None:
        self.received = 0
        """Bytes read since the last request's first write."""


class _LeanStream(httpcore.AsyncNetworkStream):
    __slots__ = (
        "_arrivals",
        "_clock",
        "_inner",
        "_read_last",
        "_socket",
        "_stream",
        "arrival_ns",
        "meter",
        "sent_ns",
    )

    def __init__(
        self,
        inner: httpcore.AsyncNetworkStream,
        clock: ArrivalClock | None = None,
        arrivals: _StampedSocket | None = None,
        meter: WireMeter | None = None,
    ) -> None:
        self.meter = meter or WireMeter()
        self._inner = inner
        stream = getattr(inner, "_stream", None)
        self._stream = stream if isinstance(stream, trio.abc.Stream) else None
        self._socket = stream.socket if is_plain_socket(stream) else None
        self._arrivals = arrivals
        """TLS over a stamped socket: reads take its arrival time."""
        self._clock = clock or arrival_clock()
        self.arrival_ns = perf_counter_ns()
        """When the bytes of the last read arrived (`perf_counter_ns`)."""
        self.sent_ns = 0
        """When the first write after a read (a request's first bytes) went out; 0: none yet."""
        self._read_last = True

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        self._read_last = True
        stream = self._stream
        if timeout is not None or stream is None:
            data = await self._inner.read(max_bytes, timeout)
            self.arrival_ns = perf_counter_ns()
            self.meter.received += len(data)
            return data
        try:
            if self._socket is not None:
                data, self.arrival_ns = await receive(self._socket, max_bytes, self._clock)
                self.meter.received += len(data)
                return data
            data = typing.cast(bytes, await stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpcore.ReadError(exc) from exc
        arrivals = self._arrivals
        # Through TLS: when the records were read (decrypted bytes left from an earlier read
        # arrived even earlier, so this is never early).
        self.arrival_ns = perf_counter_ns() if arrivals is None else arrivals.arrival_ns
        self.meter.received += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self._read_last:
            self._read_last = False
            self.sent_ns = perf_counter_ns()
            self.meter.received = 0
        stream = self._stream
        if timeout is not None or stream is None:
            await self._inner.write(buffer, timeout)
            return
        if not buffer:
            return
        try:
            await stream.send_all(buffer)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpcore.WriteError(exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        """TLS as httpcore's trio backend does it (same `SSLStream` settings, errors and
        cleanup), but over a socket whose reads are stamped with their arrival."""
        stream = self._stream
        if not is_plain_socket(stream):  # TLS in TLS (an HTTPS proxy's tunnel): httpcore's own
            inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
            # the same raw socket below
            return _LeanStream(inner, self._clock, self._arrivals, self.meter)
        transport = _StampedSocket(stream, self._clock)
        tls = trio.SSLStream(
            transport, ssl_context, server_hostname=server_hostname, https_compatible=True
        )
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                await tls.do_handshake()
        except Exception as exc:
            await self.aclose()
            if isinstance(exc, trio.TooSlowError):
                raise httpcore.ConnectTimeout(exc) from exc
            if isinstance(exc, trio.BrokenResourceError):
                raise httpcore.ConnectError(exc) from exc
            raise
        # httpcore's own stream class around it (its timed reads, `ssl_object`, closing).
        stream_type: typing.Any = type(self._inner)
        return _LeanStream(stream_type(tls), self._clock, transport, self.meter)

    def get_extra_info(self, info: str) -> typing.Any:
        arrivals = self._arrivals
        if arrivals is not None:  # httpcore's stream looks for a SocketStream under the TLS
            sock = arrivals.socket
            if info == "socket":
                return sock
            if info == "is_readable":
                return sock.is_readable()
            if info == "client_addr":
                return sock.getsockname()
            if info == "server_addr":
                return sock.getpeername()
        return self._inner.get_extra_info(info)


class LeanTrioBackend(httpcore.AsyncNetworkBackend):
    """`httpcore.TrioBackend` whose streams skip the per-operation machinery when untimed.

    `meter` is the `WireMeter` of the connection it opened last: a lane has a backend of its
    own, so that is the lane's connection (`stages.execute.client.transport.lanes`)."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()
        self.meter: WireMeter | None = None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[_Option] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.meter = None  # until the new connection exists: a failed connect carried nothing
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        lean = _LeanStream(stream)
        self.meter = lean.meter
        return lean

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[_Option] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.meter = None
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        lean = _LeanStream(stream)
        self.meter = lean.meter
        return lean

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def arrival_ns(stream: object) -> int | None:
    """When the last read of a response's network stream arrived, if the stream is one of ours."""
    return stream.arrival_ns if isinstance(stream, _LeanStream) else None


def sent_ns(stream: object) -> int | None:
    """When the request on a response's network stream started to go out, if the stream is one
    of ours (its first write after the previous response's reads)."""
    return stream.sent_ns or None if isinstance(stream, _LeanStream) else None
