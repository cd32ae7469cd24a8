"""The HTTP mock as real clients see it: the official OpenAI and Anthropic SDKs, httpx for Ollama.

The server runs in the test's trio loop; the (synchronous) SDKs run in a worker thread, so both
sides really talk over a socket on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import httpx2
import openai
import pytest
import trio

from schemas import MockConfiguration
from stages.mock.http.server import REQUEST_INDEX_HEADER, serve
from stages.mock.sim import MockSimulator, estimate_input_tokens
from tests.conftest import CliResult, mock_server_processes

T = TypeVar("T")
PROMPT = "What is the capital of France?"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@asynccontextmanager
async def running(**knobs: Any) -> AsyncIterator[str]:
    """A mock server on a free port for the duration of the block; yields its base URL."""
    config = MockConfiguration.model_validate({"simulated_latency": "5ms", **knobs})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, config, "127.0.0.1", 0))
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def wait_idle(base: str) -> dict[str, Any]:
    """Poll /health until no request is in flight (the server noticed every client leaving)."""
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(500):
            health: dict[str, Any] = (await client.get("/health")).json()
            if not health["in_flight"] and not health["held_bytes"]:
                return health
            await trio.sleep(0.01)
    raise AssertionError(f"requests still in flight: {health}")


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def oa(base: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="test", max_retries=0, **kwargs)


def an(base: str, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="test", max_retries=0, **kwargs)


def chat_stream(base: str, **extra: Any) -> list[Any]:
    with oa(base) as client:
        stream = client.chat.completions.create(
            model="mock-small",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=32,
            stream=True,
            **extra,
        )
        with stream:
            return list(stream)


# --- OpenAI -------------------------------------------------------------------------------


async def test_openai_stream_with_usage() -> None:
    async with running(output_tokens=6) as base:
        chunks = await in_thread(lambda: chat_stream(base, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = MockSimulator(MockConfiguration(output_tokens=6)).plan(0, 32).text_tokens
    assert text == "".join(expected)
    assert chunks[0].object == "chat.completion.chunk"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens == estimate_input_tokens(PROMPT)
    assert usage.total_tokens == usage.prompt_tokens + 6
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_without_usage_and_non_stream() -> None:
    async with running(output_tokens=4) as base:
        chunks = await in_thread(lambda: chat_stream(base))

        def whole() -> Any:
            with oa(base) as client:
                return client.chat.completions.with_raw_response.create(
                    model="mock-small",
                    messages=[{"role": "user", "content": PROMPT}],
                    max_tokens=3,
                )

        raw = await in_thread(whole)
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "length"  # 4 tokens capped at max_tokens=3
    assert len(completion.choices[0].message.content.split()) == 3
    assert completion.usage.completion_tokens == 3


async def test_openai_tool_calls() -> None:
    async with running(output_tokens=5) as base:
        chunks = await in_thread(lambda: chat_stream(base, tools=[TOOL]))

        def whole() -> Any:
            with oa(base) as client:
                return client.chat.completions.create(
                    model="mock-small",
                    messages=[{"role": "user", "content": "Weather in Paris?"}],
                    tools=[TOOL],  # type: ignore[list-item]
                )

        completion = await in_thread(whole)
    deltas = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert len(deltas) == 5
    assert deltas[0][0].function.name == "get_weather" and deltas[0][0].id.startswith("call_")
    arguments = "".join(d[0].function.arguments for d in deltas)
    assert len(json.loads(arguments)["city"].split()) == 5
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_models_and_health() -> None:
    async with running() as base:

        def listing() -> list[str]:
            with oa(base) as client:
                return [m.id for m in client.models.list()]

        assert "mock-small" in await in_thread(listing)
        async with httpx.AsyncClient(base_url=base) as client:
            health = (await client.get("/health")).json()
            tags = (await client.get("/api/tags")).json()
    assert health["status"] == "ok" and health["in_flight"] == 0
    assert tags["models"][0]["name"] == "mock-small"


# --- Anthropic ----------------------------------------------------------------------------


async def test_anthropic_stream_and_usage() -> None:
    async with running(output_tokens=7) as base:

        def stream() -> tuple[list[str], Any]:
            with an(base) as client:
                with client.messages.stream(
                    model="mock-small",
                    max_tokens=64,
                    system="Be brief.",
                    messages=[{"role": "user", "content": PROMPT}],
                ) as events:
                    kinds: list[str] = [event.type for event in events]
                    return kinds, events.get_final_message()

        kinds, message = await in_thread(stream)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") == 7 or kinds.count("text") == 7
    assert "message_delta" in kinds
    assert message.stop_reason == "end_turn"
    assert len(message.content[0].text.split()) == 7
    assert message.usage.output_tokens == 7
    assert message.usage.input_tokens == estimate_input_tokens("Be brief.\n" + PROMPT)


async def test_anthropic_non_stream_and_tool_use() -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {}}}}
    async with running(output_tokens=3) as base:

        def calls() -> tuple[Any, Any]:
            with an(base) as client:
                raw = client.messages.with_raw_response.create(
                    model="mock-small", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
                )
                with client.messages.stream(
                    model="mock-small",
                    max_tokens=64,
                    tools=[tool],  # type: ignore[list-item]
                    messages=[{"role": "user", "content": "Weather in Paris?"}],
                ) as events:
                    return raw, events.get_final_message()

        raw, streamed = await in_thread(calls)
    assert raw.headers["request-id"].startswith("req_")
    message = raw.parse()
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2
    block = streamed.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert len(block.input["city"].split()) == 3
    assert streamed.stop_reason == "tool_use"


# --- Ollama -------------------------------------------------------------------------------


async def test_ollama_ndjson_stream_and_non_stream() -> None:
    body = {"model": "mock-small", "messages": [{"role": "user", "content": PROMPT}]}
    async with running(output_tokens=4) as base, httpx.AsyncClient(base_url=base) as client:
        async with client.stream("POST", "/api/chat", json=body) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
        whole = (await client.post("/api/chat", json={**body, "stream": False})).json()
        limited = (
            await client.post(
                "/api/chat", json={**body, "stream": False, "options": {"num_predict": 2}}
            )
        ).json()
    assert [line["done"] for line in lines] == [False] * 4 + [True]
    final = lines[-1]
    assert final["eval_count"] == 4 and final["prompt_eval_count"] == estimate_input_tokens(PROMPT)
    assert final["total_duration"] >= final["prompt_eval_duration"] > 0
    streamed = "".join(line["message"]["content"] for line in lines)
    assert len(streamed.split()) == len(whole["message"]["content"].split()) == 4
    assert whole["done"] is True and whole["eval_count"] == 4
    assert limited["eval_count"] == 2 and limited["done_reason"] == "length"


# --- Injected errors, as each client sees them ---------------------------------------------


def openai_error(base: str, *, stream: bool, timeout: float = 10.0) -> BaseException:
    with oa(base, timeout=timeout) as client:
        try:
            response = client.chat.completions.create(
                model="mock-small",
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=8,
                stream=stream,
            )
            if stream:
                with response:  # type: ignore[union-attr]
                    for _ in response:
                        pass
        except Exception as exc:
            return exc
    raise AssertionError("no error")


@pytest.mark.parametrize(
    ("kind", "stream", "expected"),
    [
        ("server_error", True, openai.InternalServerError),
        ("unavailable", False, openai.InternalServerError),
        ("cut", True, openai.APIConnectionError),
        ("cut", False, openai.APIConnectionError),
        ("malformed", True, json.JSONDecodeError),
        ("malformed", False, json.JSONDecodeError),
    ],
)
async def test_openai_sees_injected_errors(kind: str, stream: bool, expected: type) -> None:
    async with running(error_injection_rate=1.0, error_kinds=[kind], output_tokens=8) as base:
        error = await in_thread(lambda: openai_error(base, stream=stream))
    assert isinstance(error, expected), repr(error)
    if kind == "unavailable":
        assert isinstance(error, openai.APIStatusError) and error.status_code == 503
        assert error.body["type"] == "server_error"  # type: ignore[index]


async def test_openai_rate_limit_carries_retry_after() -> None:
    async with running(
        error_injection_rate=1.0, error_kinds=["rate_limit"], retry_after="2s"
    ) as base:
        error = await in_thread(lambda: openai_error(base, stream=True))
    assert isinstance(error, openai.RateLimitError)
    assert error.response.headers["retry-after"] == "2"
    assert error.response.headers["x-request-id"].startswith("req_")
    assert error.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


async def test_hang_runs_into_the_client_timeout_and_frees_the_slot() -> None:
    async with running(error_injection_rate=1.0, error_kinds=["hang"]) as base:
        started = time.perf_counter()
        error = await in_thread(lambda: openai_error(base, stream=True, timeout=0.5))
        assert isinstance(error, openai.APITimeoutError)
        assert 0.45 < time.perf_counter() - started < 5
        await wait_idle(base)


async def test_anthropic_sees_injected_errors() -> None:
    def call(base: str) -> BaseException:
        with an(base) as client:
            try:
                with client.messages.stream(
                    model="mock-small", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                ) as events:
                    for _ in events:
                        pass
            except Exception as exc:
                return exc
        raise AssertionError("no error")

    seen = {}
    for kind in ("rate_limit", "unavailable", "cut", "malformed"):
        async with running(error_injection_rate=1.0, error_kinds=[kind], output_tokens=6) as base:
            seen[kind] = await in_thread(partial(call, base))
    assert isinstance(seen["rate_limit"], anthropic.RateLimitError)
    assert seen["rate_limit"].response.headers["retry-after"] == "1"
    assert seen["rate_limit"].body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert isinstance(seen["unavailable"], anthropic.OverloadedError)
    # the Anthropic SDK lets the transport's error through while iterating a stream
    assert isinstance(seen["cut"], anthropic.APIConnectionError | httpx2.RemoteProtocolError)
    assert isinstance(seen["malformed"], json.JSONDecodeError)


async def test_ollama_sees_injected_errors() -> None:
    body = {"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}
    async with running(error_injection_rate=1.0, error_kinds=["server_error"]) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.post("/api/chat", json=body)
    assert response.status_code == 500 and isinstance(response.json()["error"], str)
    async with running(error_injection_rate=1.0, error_kinds=["cut"], output_tokens=5) as base:
        async with httpx.AsyncClient(base_url=base) as client:

            async def read_all() -> None:
                async with client.stream("POST", "/api/chat", json=body) as streamed:
                    await streamed.aread()

            with pytest.raises(httpx.RemoteProtocolError):
                await read_all()


# --- Bad requests and hostile clients --------------------------------------------------------


async def test_malformed_requests_get_400_in_the_providers_shape() -> None:
    async with running() as base:

        def sdk_call() -> BaseException:
            with oa(base) as client:
                try:
                    client.chat.completions.create(model="mock-small", messages=[])
                except openai.BadRequestError as exc:
                    return exc
            raise AssertionError("no error")

        error = await in_thread(sdk_call)
        assert error.body["type"] == "invalid_request_error"  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=base) as client:
            bad_json = await client.post("/v1/chat/completions", content=b"{not json")
            no_max = await client.post(
                "/v1/messages", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
            )
            ollama = await client.post("/api/chat", json={"messages": "nope"})
            missing = await client.get("/v1/nothing")
            wrong_method = await client.get("/v1/chat/completions")
    assert (
        bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    )
    assert no_max.status_code == 400
    assert no_max.json()["type"] == "error"
    assert no_max.json()["error"]["type"] == "invalid_request_error"
    assert no_max.headers["request-id"].startswith("req_")
    assert ollama.status_code == 400 and isinstance(ollama.json()["error"], str)
    assert missing.status_code == 404 and wrong_method.status_code == 405


def _complete(received: bytes) -> bool:
    """Whether `received` holds a whole response with a content-length: a server that keeps the
    connection open after it has nothing more to say to this request."""
    head, blank, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:] if blank else ():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


async def _raw(port: int, payload: bytes, *, read: bool = True) -> bytes:
    """Send `payload` on a new connection; what came back until the server closed it, a whole
    response with a content-length arrived, or 2 s passed."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        if not read:
            return b""
        received = b""
        with trio.move_on_after(2):
            while not _complete(received) and (chunk := await stream.receive_some(65536)):
                received += chunk
        return received


async def test_nothing_a_client_sends_kills_the_server() -> None:
    async with running(output_tokens=50, token_generation_rate=100) as base:
        port = int(base.rsplit(":", 1)[1])
        assert (await _raw(port, b"\x00\xff garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (
            b" 413 "
            in (
                await _raw(
                    port,
                    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\n",
                )
            )[:20]
        )
        await _raw(
            port,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{",
            read=False,
        )
        huge = b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-a: b\r\n" * 20000
        assert (await _raw(port, huge)).startswith(b"HTTP/1.1 431")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        encoded = json.dumps(body).encode()
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(encoded)}\r\n\r\n".encode()
            + encoded
        )
        for _ in range(3):  # leave mid-stream
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
        health = await wait_idle(base)
        assert health["status"] == "ok"
        async with httpx.AsyncClient(base_url=base) as client:
            ok = await client.post("/v1/chat/completions", json={**body, "stream": False})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 50


async def test_keep_alive_reuses_one_connection() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with running(output_tokens=2) as base:

        def sdk_calls() -> None:
            with oa(base) as client:
                for _ in range(3):
                    client.chat.completions.create(**body)  # type: ignore[call-overload]

        await in_thread(sdk_calls)
        async with httpx.AsyncClient(base_url=base) as client:
            for path in ("/v1/chat/completions", "/v1/messages", "/api/chat"):
                streamed = {**body, "stream": True, "max_tokens": 2}
                async with client.stream("POST", path, json=streamed) as response:
                    await response.aread()
            health = (await client.get("/health")).json()
    assert health["requests"] == 6 and health["connections"] == 2  # the SDK's and httpx's


# --- Timing, overload and determinism --------------------------------------------------------


def _ttfts(base: str, count: int, headers: dict[str, str] | None = None) -> list[float]:
    """Seconds from sending to the first chunk with content, per sequential streamed request."""
    out = []
    with oa(base, default_headers=headers or {}) as client:
        for _ in range(count):
            started = time.perf_counter()
            with client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
            ) as stream:
                first = None
                for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter() - started
            assert first is not None
            out.append(first)
    return out


async def test_ttft_at_concurrency_one_is_the_configured_one() -> None:
    async with running(simulated_latency="80ms", token_generation_rate=1000) as base:
        ttfts = sorted(await in_thread(lambda: _ttfts(base, 5)))
    assert ttfts[0] >= 0.079
    assert ttfts[2] < 0.080 + 0.030  # the median, generous for a loaded machine


async def test_same_seed_same_sequence_another_seed_another() -> None:
    knobs = {"simulated_latency": "40ms", "response_variability": 0.5, "error_injection_rate": 0.4}

    def outcomes(base: str) -> list[str]:
        seen = []
        with oa(base) as client:
            for _ in range(12):
                try:
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                    )
                    seen.append("ok")
                except openai.APIStatusError as exc:
                    seen.append(str(exc.status_code))
        return seen

    runs: dict[int, list[list[str]]] = {}
    for seed in (1, 1, 2):
        async with running(seed=seed, **knobs) as base:
            runs.setdefault(seed, []).append(await in_thread(partial(outcomes, base)))
    assert runs[1][0] == runs[1][1]
    assert runs[1][0] != runs[2][0]
    assert {"ok", "429"} <= set(runs[1][0] + runs[2][0])

    # The timings follow the seeded plan: request N's first token comes at plan(N).ttft_s.
    knobs["error_injection_rate"] = 0
    plans = MockSimulator(MockConfiguration.model_validate({"seed": 1, **knobs}))
    async with running(seed=1, **knobs) as base:
        seen = await in_thread(lambda: _ttfts(base, 6))
    planned = [plans.plan(index, 3).ttft_s for index in range(len(seen))]
    late = sorted(got - want for got, want in zip(seen, planned, strict=True))
    assert late[0] >= -0.001  # never before its planned time
    assert late[len(late) // 2] < 0.030 and late[-1] < 0.100  # generous on a loaded machine


async def test_pinned_request_index_makes_concurrent_runs_reproducible() -> None:
    knobs = {"error_injection_rate": 0.5, "error_kinds": ["server_error"], "seed": 5}
    async with running(**knobs) as base, httpx.AsyncClient(base_url=base) as client:
        statuses: dict[int, int] = {}

        async def one(index: int) -> None:
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 2,
                },
                headers={REQUEST_INDEX_HEADER: str(index)},
            )
            statuses[index] = response.status_code

        async with trio.open_nursery() as nursery:
            for index in range(10):
                nursery.start_soon(one, index)
    sim = MockSimulator(MockConfiguration.model_validate(knobs))
    assert statuses == {i: 500 if sim.plan(i, 2).error else 200 for i in range(10)}


async def test_overload_queue_or_reject() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

    async def burst(base: str) -> list[tuple[int, float]]:
        results: list[tuple[int, float]] = []
        async with httpx.AsyncClient(base_url=base) as client:
            started = trio.current_time()

            async def one() -> None:
                response = await client.post("/v1/chat/completions", json=body)
                results.append((response.status_code, trio.current_time() - started))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(one)
        return sorted(results, key=lambda r: r[1])

    async with running(simulated_latency="100ms", concurrency_limit=1) as base:
        queued = await burst(base)
    assert [status for status, _ in queued] == [200, 200, 200]
    assert queued[-1][1] >= 0.29  # three requests of 100 ms through one slot
    async with running(simulated_latency="500ms", concurrency_limit=1, overload="reject") as base:
        rejected = await burst(base)
    assert sorted(status for status, _ in rejected) == [200, 429, 429]


# --- The command --------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_server_prints_its_address_and_stops_cleanly(signum: int) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "mock-server",
            "--port",
            "0",
            "-v",
            "--output-tokens",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the server printed nothing in 30 s"
        line = proc.stdout.readline()
        assert line.startswith("mock server listening on http://127.0.0.1:"), line
        base = line.split()[-1]
        with httpx.Client(base_url=base) as client:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert response.status_code == 200
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "POST /v1/chat/completions 200" in err


MOCK_TARGETS = """
[[targets]]
name = "real"
provider = "openai"
model = "gpt-4o-mini"

[[targets]]
name = "quick"
provider = "mock"
model = "m"
mock = { simulated_latency = "1ms", token_generation_rate = 1000, output_tokens = 2 }

[[targets]]
name = "chosen"
provider = "mock"
model = "m"
mock = { simulated_latency = "300ms", token_generation_rate = 1000, output_tokens = 5 }
"""


def _ask(root: str) -> tuple[int, float]:
    """One non-streamed chat completion asking for 50 tokens: (tokens answered, seconds)."""
    body = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    started = time.perf_counter()
    response = httpx.post(f"{root}/v1/chat/completions", json=body, timeout=30)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return response.json()["usage"]["completion_tokens"], elapsed


def test_cli_server_takes_a_mock_targets_knobs_from_a_config(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """`--config FILE` serves the first mock target's knobs, `--target NAME` that one's, and a
    flag given as well wins over the file (each server in its own process, asked over HTTP)."""
    path = tmp_path / "mocks.toml"
    path.write_text(MOCK_TARGETS)
    config = ["--config", str(path)]
    with mock_server_processes(
        config,
        [*config, "--target", "chosen"],
        [*config, "--target", "chosen", "--output-tokens", "3"],
    ) as (first, chosen, overridden):
        assert _ask(first)[0] == 2
        tokens, seconds = _ask(chosen)
        assert tokens == 5 and seconds >= 0.3
        tokens, seconds = _ask(overridden)
        assert tokens == 3 and seconds >= 0.3  # the flag's tokens, the file's latency
    refused = cli("mock-server", *config, "--target", "real")
    assert refused.code == 2
    assert f"{path}: no mock target 'real'; mock targets: quick, chosen" in refused.err
