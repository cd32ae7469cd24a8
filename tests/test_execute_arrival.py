"""Timestamps taken where the bytes are, not where the client's loop happens to be.

`stages/net/arrival.py`: a read that had to wait is stamped with the instant trio's I/O wait
saw its bytes, so other streams' work in the same loop does not make it late. The client's HTTP
streams also record when a request's first bytes went out (`sent_ns`), which is where its
latency starts on a kept-alive connection.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from functools import partial
from pathlib import Path
from time import perf_counter_ns
from typing import Any, cast

import httpcore
import polars as pl
import pytest
import trio
import trustme

from schemas import MockConfiguration
from stages.execute.client.transport.backend import LeanTrioBackend, arrival_ns, sent_ns
from stages.mock.http.server import MockServer
from stages.net.arrival import arrival_clock, receive
from tests._execute_support import config, requests, run, scenario

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
        hog_woke: list[int] = []  # the I/O wait that woke the busy task, if it ran first
        got: dict[str, int] = {}
        with reader_a, writer_a, reader_b, writer_b:

            async def read() -> None:
                data, got["stamp"] = await receive(reader_a, 100, clock)  # noqa: B023
                got["ran"] = perf_counter_ns()  # noqa: B023
                assert data == b"token"

            async def hog() -> None:
                await trio.lowlevel.wait_readable(reader_b)  # noqa: B023
                if "ran" not in got:  # noqa: B023
                    hog_woke.append(arrival_clock().io_ns)  # noqa: B023
                time.sleep(_BUSY_S)  # noqa: ASYNC251 - the point: a loop busy with another stream

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(hog)
                await trio.sleep(0.01)  # both are waiting now
                sent = perf_counter_ns()
                writer_a.send(b"token")  # both without yielding: one I/O wait sees both
                writer_b.send(b"x")
        if hog_woke == [got["stamp"]]:  # woken by one wait, the busy task ran first
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


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for `localhost`, from a throwaway CA."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_through_tls_a_read_takes_the_time_its_records_arrived(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """The TLS stream reads its records through a stamped socket: the decrypted reply keeps the
    instant the loop saw the records, even when another stream's task kept the loop busy first;
    and httpcore still finds the socket under the TLS (to see if a kept-alive one expired)."""
    server_context, client_context = tls
    for _ in range(40):
        hog_reader, hog_writer = _pair()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        go = threading.Event()
        sent: list[int] = []

        def serve() -> None:  # a plain blocking TLS server in a thread
            conn, _ = listener.accept()  # noqa: B023
            conn.settimeout(10)
            with server_context.wrap_socket(conn, server_side=True) as stream:
                stream.recv(100)  # the first exchange: the client also reads the session tickets
                stream.sendall(b"hello")
                stream.recv(100)
                go.wait(10)  # noqa: B023 - answer once the client waits for it
                sent.append(perf_counter_ns())  # noqa: B023
                stream.sendall(b"answer")
                hog_writer.send(b"x")  # noqa: B023
                stream.recv(100)  # until the client closes

        hog_woke: list[int] = []  # the I/O wait that woke the busy task, if it ran first
        got: dict[str, int] = {}

        async def hog() -> None:
            await trio.lowlevel.wait_readable(hog_reader)  # noqa: B023
            if "ran" not in got:  # noqa: B023
                hog_woke.append(arrival_clock().io_ns)  # noqa: B023
            time.sleep(_BUSY_S)  # noqa: ASYNC251 - a loop busy with another stream

        async def read(stream: httpcore.AsyncNetworkStream) -> None:
            assert await stream.read(100) == b"answer"
            got["ran"] = perf_counter_ns()  # noqa: B023

        server = threading.Thread(target=serve)
        server.start()
        with listener, hog_reader, hog_writer:
            port = listener.getsockname()[1]
            stream = await LeanTrioBackend().connect_tcp("127.0.0.1", port)
            stream = await stream.start_tls(client_context, "localhost")
            assert stream.get_extra_info("ssl_object") is not None
            assert stream.get_extra_info("server_addr")[1] == port
            await stream.write(b"first?")
            assert await stream.read(100) == b"hello"
            assert stream.get_extra_info("is_readable") is False
            await stream.write(b"question?")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, stream)
                nursery.start_soon(hog)
                await trio.sleep(0.01)  # both wait now
                go.set()
                time.sleep(0.02)  # noqa: ASYNC251 - both replies arrive before the next I/O wait
            stamp = arrival_ns(stream)
            await stream.aclose()
            server.join()
        assert stamp is not None and sent[0] <= stamp <= got["ran"]
        if hog_woke == [stamp]:  # woken by one wait, the busy task ran first
            assert stamp <= got["ran"] - int(_BUSY_S * 0.8e9)
            return
    pytest.fail("the busy task never ran first in 40 tries")


async def test_tls_inside_tls_as_through_an_https_proxy(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """An HTTPS proxy's tunnel: TLS to the proxy, then TLS to the target inside it. The inner
    stream still answers for the raw socket (httpcore asks it whether a connection expired) and
    still takes its reads' arrival from it."""
    server_context, client_context = tls
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:  # the proxy's TLS, and inside it the target's, pumped by hand
        conn, _ = listener.accept()
        conn.settimeout(10)
        with server_context.wrap_socket(conn, server_side=True) as outer:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            inner = server_context.wrap_bio(incoming, outgoing, server_side=True)
            received = b""
            while True:
                try:
                    inner.do_handshake()
                    received += inner.read(100)
                except ssl.SSLWantReadError:
                    pass
                if received.endswith(b"?"):
                    break
                if pending := outgoing.read():
                    outer.sendall(pending)
                    continue
                data = outer.recv(4096)
                if not data:
                    return
                incoming.write(data)
            inner.write(b"through")
            outer.sendall(outgoing.read())
            outer.recv(100)  # until the client closes

    server = threading.Thread(target=serve)
    server.start()
    with listener:
        port = listener.getsockname()[1]
        stream = await LeanTrioBackend().connect_tcp("127.0.0.1", port)
        stream = await stream.start_tls(client_context, "localhost")
        stream = await stream.start_tls(client_context, "localhost")
        await stream.write(b"hello?")
        assert await stream.read(100) == b"through"
        assert stream.get_extra_info("is_readable") is False
        assert stream.get_extra_info("server_addr")[1] == port
        stamp = arrival_ns(stream)
        assert stamp is not None and stamp <= perf_counter_ns()
        await stream.aclose()
    server.join()
    assert not server.is_alive()


async def test_execute_over_tls_against_the_mock(
    ca: trustme.CA,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole client path a real provider takes (lanes, httpcore, the lean backend's TLS):
    the project's mock server behind TLS, trusted through SSL_CERT_FILE as a user would."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    server = MockServer(
        MockConfiguration.model_validate(
            {"simulated_latency": "30ms", "token_generation_rate": 500, "output_tokens": 5}
        )
    )
    target = {
        "name": "tls",
        "provider": "openai-compatible",
        "model": "mock-small",
        "base_url": "",
        "request_timeout": "5s",
    }
    async with trio.open_nursery() as nursery:
        handle = cast(Any, server.handle)  # typed for a socket stream; reads any trio stream
        serve = partial(trio.serve_ssl_over_tcp, handle, 0, tls[0], host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        target["base_url"] = f"https://localhost:{port}/v1"
        loaded = config([target], [scenario(expected_operations=6, concurrency_level=3)], tmp_path)
        result = await run(loaded, tmp_path / "data")
        nursery.cancel_scope.cancel()
    assert result.status == "completed"
    frame = requests(tmp_path / "data").filter(~pl.col("warmup"))
    assert frame.height == 6 and set(frame["status"]) == {"ok"}
    for row in frame.to_dicts():
        offsets = row["chunk_offsets_us"]
        assert len(offsets) == 5 and offsets == sorted(offsets), row
        assert 30_000 <= row["ttft_us"] == offsets[0] <= row["latency_us"] < 2_000_000, row
