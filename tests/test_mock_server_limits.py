"""The mock server's limits over real sockets: what one client, or many at once, can make it hold.

Each limit answers in the provider's error shape with the status a real server would use: a head
over 64 KiB or 100 fields 431, a `max_tokens` over the mock's 100,000 400 naming the field, JSON
nested past Python's recursion limit 400, and request data over 64 MiB held at once 503 (529 for
Anthropic). Also: the server's start-up failures are one line and exit 1, and a request answered
just before shutdown still gets its log line.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import httpx
import psutil
import pytest
import trio

from schemas import MAX_MOCK_OUTPUT_TOKENS, MockConfiguration
from stages.mock.http.connection import MAX_BODY, MAX_HELD_BYTES
from stages.mock.http.server import serve
from tests.test_mock_server import _raw, running

MESSAGES = [{"role": "user", "content": "hi"}]


def _request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n".encode()
        + extra
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _json_body(response: bytes) -> object:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


async def _whole_response(stream: trio.SocketStream) -> bytes:
    """Read one response with a content-length, to its last byte, and no further."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(65536)
    head, _ = received.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(received) < len(head) + 4 + length:
        received += await stream.receive_some(65536)
    return received


# --- Heads ---------------------------------------------------------------------------------


async def test_a_head_over_64_kib_is_431_even_when_it_arrives_whole() -> None:
    async with running() as base:
        port = int(base.rsplit(":", 1)[1])
        # Two 35 KB fields, one write: complete once read, so h11's own limit never applies.
        big = b"x-a: " + b"a" * 35_000 + b"\r\nx-b: " + b"b" * 35_000 + b"\r\n"
        answer = await _raw(port, b"GET /health HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
        assert _status(answer) == 431, answer[:200]
        assert b"connection: close" in answer.lower()
        fields = b"".join(b"x-%d: v\r\n" % i for i in range(100))  # + host: 101 fields
        assert (
            _status(await _raw(port, b"GET /health HTTP/1.1\r\nhost: x\r\n" + fields + b"\r\n"))
            == 431
        )
        fine = b"".join(b"x-%d: v\r\n" % i for i in range(99))
        assert (
            _status(await _raw(port, b"GET /health HTTP/1.1\r\nhost: x\r\n" + fine + b"\r\n"))
            == 200
        )
        # A head just under 64 KiB in total is served.
        near = b"x-a: " + b"a" * 60_000 + b"\r\n"
        assert (
            _status(await _raw(port, b"GET /health HTTP/1.1\r\nhost: x\r\n" + near + b"\r\n"))
            == 200
        )
        answer = await _raw(port, _request("/v1/messages", b"{}", big))
        assert _status(answer) == 431 and _json_body(answer)["type"] == "error"  # type: ignore[index]


# --- Bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "body"),
    [
        ("/v1/chat/completions", "max_tokens", {"max_tokens": MAX_MOCK_OUTPUT_TOKENS + 1}),
        (
            "/v1/chat/completions",
            "max_completion_tokens",
            {"max_completion_tokens": 10**12},
        ),
        ("/v1/messages", "max_tokens", {"max_tokens": 2**63}),
        ("/api/chat", "num_predict", {"options": {"num_predict": MAX_MOCK_OUTPUT_TOKENS + 1}}),
    ],
)
async def test_max_tokens_over_the_mocks_limit_is_400_naming_the_field(
    path: str, field: str, body: dict[str, object]
) -> None:
    async with running() as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.post(path, json={"model": "m", "messages": MESSAGES, **body})
        health = (await client.get("/health")).json()
    assert response.status_code == 400, response.text
    assert f"'{field}' must be at most 100000" in response.text
    if path == "/v1/chat/completions":
        assert response.json()["error"]["param"] == field
    assert health["in_flight"] == 0 and health["requests"] == 0  # refused before any plan


async def test_max_tokens_at_the_limit_is_served() -> None:
    async with (
        running(token_generation_rate=1e6, simulated_latency=0) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        body = {"model": "m", "messages": MESSAGES, "max_tokens": MAX_MOCK_OUTPUT_TOKENS}
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == MAX_MOCK_OUTPUT_TOKENS


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/api/chat"])
async def test_json_nested_too_deeply_is_400(path: str) -> None:
    nested = b'{"model": "m", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    async with running() as base:
        port = int(base.rsplit(":", 1)[1])
        answer = await _raw(port, _request(path, nested))
        assert _status(answer) == 400, answer[:300]
        assert b"nested too deeply" in answer
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/health")).status_code == 200


async def test_request_data_over_64_mib_held_at_once_is_503_until_some_is_given_back() -> None:
    """Eight clients each announce an 8 MiB body and send none of it: the server holds (has
    reserved) 64 MiB, so the ninth is refused at once, in its provider's shape; when one of the
    eight leaves, a request fits again."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % MAX_BODY
    assert MAX_HELD_BYTES == 8 * MAX_BODY
    async with running() as base:
        port = int(base.rsplit(":", 1)[1])
        holders = []
        for _ in range(8):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(head + b"{")
            holders.append(stream)
        await trio.sleep(0.2)  # the server has read every head and reserved every body
        busy = await _raw(port, head)
        assert _status(busy) == 503, busy[:300]
        assert b"retry-after: 1" in busy.lower() and b"connection: close" in busy.lower()
        assert _json_body(busy)["error"]["code"] == "service_unavailable"  # type: ignore[index]
        anthropic = await _raw(port, head.replace(b"/v1/chat/completions", b"/v1/messages"))
        assert _status(anthropic) == 529
        assert _json_body(anthropic)["error"]["type"] == "overloaded_error"  # type: ignore[index]
        await holders.pop().aclose()
        await trio.sleep(0.2)
        async with httpx.AsyncClient(base_url=base) as client:
            body = {"model": "m", "messages": MESSAGES, "max_tokens": 1}
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
            assert (await client.get("/health")).json()["held_bytes"] == 7 * MAX_BODY
            for stream in holders:
                await stream.aclose()
            await trio.sleep(0.2)
            assert (await client.get("/health")).json()["held_bytes"] == 0  # all given back


@contextmanager
def server_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`pipeline mock-server --port 0 ARGS` in its own process; yields it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "mock-server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the server printed nothing in 30 s"
        yield proc, proc.stdout.readline().split()[-1]
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_a_hundred_clients_sending_8_mib_each_keep_the_servers_memory_bounded() -> None:
    """100 clients send an 8 MiB JSON body each, all at once (800 MiB in flight): the server
    holds at most 64 MiB of it and sheds the rest with 503, so its RSS stays bounded."""
    content = "x" * (MAX_BODY - 200)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]})
    payload = _request("/v1/chat/completions", body.encode())
    assert len(payload) <= MAX_BODY + 200
    statuses: list[int] = []

    def client(port: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(payload)
                statuses.append(_status(sock.recv(65536)))
        except OSError:
            statuses.append(0)  # refused and closed before it finished sending: shed too

    with server_process("--latency", "200ms", "--output-tokens", "1") as (proc, base):
        server = psutil.Process(proc.pid)
        port = int(base.rsplit(":", 1)[1])
        baseline = server.memory_info().rss
        peak = baseline
        threads = [threading.Thread(target=client, args=(port,)) for _ in range(100)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.005)
        for thread in threads:
            thread.join()
        health = httpx.get(base + "/health").json()
        assert health["status"] == "ok" and health["held_bytes"] == 0
    grown = (peak - baseline) / 2**20
    assert 200 in statuses and (503 in statuses or 0 in statuses), statuses
    # Measured: ~120 MiB (64 MiB of bodies, their parsed text, buffers); ~950 MiB unbounded.
    assert grown < 250, f"the server's RSS grew by {grown:.0f} MiB (from {baseline >> 20} MiB)"


# --- Starting and stopping -----------------------------------------------------------------


def _fails_to_listen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "mock-server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_port_in_use_or_an_unknown_host_is_one_line_and_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        in_use = _fails_to_listen("--port", str(port))
    unknown = _fails_to_listen("--host", "no.such.host.invalid", "--port", "0")
    not_here = _fails_to_listen("--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: not ours
    for result, cause in (
        (in_use, f"127.0.0.1:{port}: Address already in use"),
        (unknown, "no.such.host.invalid:0: "),
        (not_here, "192.0.2.1:0: Cannot assign requested address"),
    ):
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mock-server: cannot listen on {cause}")


async def test_a_request_answered_just_before_shutdown_is_still_logged() -> None:
    """The client has the whole answer when the server is cancelled: its log line must not be
    lost to the cancellation (trio runs the two sides in random order, hence the rounds)."""
    config = MockConfiguration.model_validate({"simulated_latency": 0, "output_tokens": 1})
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    for _ in range(30):
        lines: list[str] = []
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve, config, "127.0.0.1", 0, log=lines.append))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(_request("/v1/chat/completions", body))
            received = await _whole_response(stream)
            nursery.cancel_scope.cancel()  # shutdown, with the connection still open
        await stream.aclose()
        assert _status(received) == 200
        assert any(line.startswith("POST /v1/chat/completions 200") for line in lines), lines
