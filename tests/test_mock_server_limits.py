"""The mock server's start and end over real sockets and processes: a failure to listen is one
line and exit 1, and a request answered just before shutdown still gets its log line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from functools import partial

import trio

from schemas import MockConfiguration
from stages.execute.mock_server import serve

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
