"""Timestamps taken where the bytes are, not where the client's loop happens to be.

`stages/execute/arrival.py`: a read that had to wait is stamped with the instant trio's I/O wait
saw its bytes, so other streams' work in the same loop does not make it late. The client's HTTP
streams also record when a request's first bytes went out (`sent_ns`), which is where its
latency starts on a kept-alive connection.
"""

from __future__ import annotations

import socket
import time
from functools import partial
from time import perf_counter_ns

import httpcore
import pytest
import trio

from stages.execute.arrival import arrival_clock, receive
from stages.execute.providers.backend import LeanTrioBackend, arrival_ns, sent_ns

_BUSY_S = 0.05


def _pair() -> tuple[trio.socket.SocketType, socket.socket]:
    """A trio socket to read, and a plain one to write to it without yielding to the loop."""
    ours, theirs = socket.socketpair()
    return trio.socket.from_stdlib_socket(ours), theirs


async def test_a_read_that_waited_is_stamped_when_the_loop_saw_its_bytes() -> None:
    """Two streams get bytes at the same moment; the task that runs first keeps the loop busy.
    The other's stamp must be when the bytes were seen, not when its task got to run."""
    clock = arrival_clock()
    for _ in range(40):  # trio runs a batch in either order: retry until the busy task is first
        reader_a, writer_a = _pair()
        reader_b, writer_b = _pair()
        order: list[str] = []
        got: dict[str, int] = {}
        with reader_a, writer_a, reader_b, writer_b:

            async def read() -> None:
                data, got["stamp"] = await receive(reader_a, 100, clock)  # noqa: B023
                got["ran"] = perf_counter_ns()  # noqa: B023
                order.append("reader")  # noqa: B023
                assert data == b"token"

            async def hog() -> None:
                await trio.lowlevel.wait_readable(reader_b)  # noqa: B023
                order.append("hog")  # noqa: B023
                time.sleep(_BUSY_S)  # noqa: ASYNC251 - the point: a loop busy with another stream

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(hog)
                await trio.sleep(0.01)  # both are waiting now
                sent = perf_counter_ns()
                writer_a.send(b"token")  # both without yielding: one I/O wait sees both
                writer_b.send(b"x")
        if order[0] == "hog":
            assert sent <= got["stamp"] <= got["ran"] - int(_BUSY_S * 0.8e9)
            return
    pytest.fail("the busy task never ran first in 40 tries")


async def test_a_read_that_found_bytes_waiting_is_stamped_when_it_ran() -> None:
    reader, writer = trio.socket.socketpair()
    with reader, writer:
        await writer.send(b"early")
        await trio.sleep(0.02)
        before = perf_counter_ns()
        data, stamp = await receive(reader, 100, arrival_clock())
        assert data == b"early" and stamp >= before


async def test_receive_reports_the_end_and_a_closed_socket_like_trio() -> None:
    reader, writer = trio.socket.socketpair()
    with reader:
        writer.close()
        assert (await receive(reader, 100, arrival_clock()))[0] == b""
    with pytest.raises(trio.ClosedResourceError):
        await receive(reader, 100, arrival_clock())


async def test_the_client_stream_knows_when_a_request_went_out_and_its_reply_came() -> None:
    """A request's first write sets `sent_ns`, its later writes do not; each read sets
    `arrival_ns`; the next request after a reply sets `sent_ns` again."""

    async def reply(server: trio.SocketStream) -> None:
        async with server:
            while data := await server.receive_some(100):
                if data.endswith(b"?"):
                    await server.send_all(b"answer")

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, reply, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        stream = await LeanTrioBackend().connect_tcp("127.0.0.1", port)
        before = perf_counter_ns()
        await stream.write(b"head ")
        first = sent_ns(stream)
        assert first is not None and first >= before
        await trio.sleep(0.01)
        await stream.write(b"body?")
        assert sent_ns(stream) == first  # the same request
        assert await stream.read(100) == b"answer"
        arrived = arrival_ns(stream)
        assert arrived is not None and first < arrived <= perf_counter_ns()
        await stream.write(b"next?")
        second = sent_ns(stream)
        assert second is not None and second >= arrived
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert sent_ns(object()) is None and arrival_ns(httpcore) is None
