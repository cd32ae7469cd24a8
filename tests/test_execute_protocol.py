"""Protocol edge cases through the whole execute path, with `httpx.MockTransport` answering.

Each test runs the runner inside the test's trio loop and reads the `requests` events back from
the log, so what is asserted is what `aggregate` will see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from stages.execute.client.framing import NdjsonFramer, SseFramer
from stages.execute.client.taxonomy import parse_retry_after, scrub
from stages.execute.load.plan import ExecuteOptions
from tests._execute_support import (
    OPENAI_USAGE,
    config,
    openai_chunk,
    requests,
    run,
    runs,
    scenario,
    sse,
    target,
)

KEY = "sk-test-PROTOCOLKEY0123456789"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXEC_TEST_KEY", KEY)


def stream_response(body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream", **headers}, content=body
    )


async def one(
    tmp_path: Path, handler: Any, *, tgt: dict[str, Any] | None = None, **scn: Any
) -> list[dict[str, Any]]:
    loaded = config(
        [target(**(tgt or {}))], [scenario(**{"expected_operations": 1, **scn})], tmp_path
    )
    await run(loaded, tmp_path / "data", handler=handler)
    return requests(tmp_path / "data").to_dicts()


async def test_openai_stream_with_usage_tools_and_request_id(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        call = {"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}}
        body = sse(
            openai_chunk(role="assistant"),
            openai_chunk("Hel"),
            openai_chunk("lo"),
            openai_chunk(tool_calls=[call]),
            openai_chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]),
            OPENAI_USAGE,
        )
        return stream_response(body, **{"x-request-id": "req_abc"})

    (row,) = await one(tmp_path, handler, tools_required=True, system_prompt="Be brief.")
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (
        body["max_completion_tokens"] == 8 and body["tools"][0]["function"]["name"] == "get_weather"
    )
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert row["status"] == "ok" and row["error_type"] is None and row["http_status"] == 200
    assert len(row["chunk_offsets_us"]) == 4  # role-only and usage chunks carry no content
    assert row["ttft_us"] == row["chunk_offsets_us"][0] <= row["latency_us"]
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (11, 3, 4)
    assert row["token_source"] == "server" and row["tool_calls"] == 1
    assert row["server_request_id"] == "req_abc"
    assert row["bytes_sent"] == len(seen[0].content) and row["bytes_received"] > 0


async def test_missing_usage_is_estimated(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return stream_response(sse(openai_chunk("abcdefgh"), openai_chunk("ijkl")))

    (row,) = await one(tmp_path, handler)
    assert row["status"] == "ok" and row["token_source"] == "estimated"
    # One token per streamed chunk (as llama.cpp, vLLM and TGI send them), not 12 chars / 4.
    assert (row["output_tokens"], row["output_token_rule"]) == (2, "chunks")
    assert (row["input_tokens"], row["input_token_rule"]) == (2, "chars/4")  # "Say hi." ≈ 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (sse(openai_chunk("a"), b"{not json", openai_chunk("b")), "malformed JSON"),
        (sse(openai_chunk("a"), openai_chunk("b"), done=False), "stream ended before [DONE]"),
        (sse(OPENAI_USAGE), "no choices"),
    ],
    ids=["malformed-line", "no-done", "empty-choices"],
)
async def test_broken_streams_are_protocol_errors(
    tmp_path: Path, body: bytes, message: str
) -> None:
    (row,) = await one(tmp_path, lambda r: stream_response(body))
    assert (row["status"], row["error_type"], row["http_status"]) == ("error", "protocol", 200)
    assert message in row["error_message"]


async def test_stream_cut_mid_way_by_the_connection(tmp_path: Path) -> None:
    async def body() -> Any:
        yield sse(openai_chunk("a"), done=False)
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )

    (row,) = await one(tmp_path, lambda r: httpx.Response(200, content=body()))
    assert row["error_type"] == "protocol" and "peer closed" in row["error_message"]
    assert len(row["chunk_offsets_us"]) == 1 and row["token_source"] == "estimated"


async def test_non_stream_empty_choices_and_missing_usage(tmp_path: Path) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"id": "x", "choices": []}),
            httpx.Response(200, json={"choices": [{"message": {"content": "Hi there!"}}]}),
            httpx.Response(200, content=b"<html>oops</html>"),
        ]
    )
    rows = await one(
        tmp_path, lambda r: next(answers), streaming_required=False, expected_operations=3
    )
    assert [r["error_type"] for r in rows] == ["protocol", None, "protocol"]
    ok = rows[1]
    assert ok["streaming"] is False and ok["ttft_us"] == ok["latency_us"]
    assert ok["token_source"] == "estimated" and ok["output_tokens"] == 3


async def test_429_retry_after_is_honoured_and_each_attempt_is_an_event(tmp_path: Path) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        if len(calls) < 3:
            body = {"error": {"message": "Rate limit reached", "type": "requests"}}
            return httpx.Response(
                429, json=body, headers={"retry-after": "0.2", "x-request-id": f"r{len(calls)}"}
            )
        return stream_response(sse(openai_chunk("ok"), OPENAI_USAGE))

    rows = await one(tmp_path, handler, tgt={"max_retries": 3})
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert [r["status"] for r in rows] == ["error", "error", "ok"]
    assert [r["http_status"] for r in rows] == [429, 429, 200]
    assert (
        rows[0]["error_type"] == "rate_limited" and "Rate limit reached" in rows[0]["error_message"]
    )
    assert len({r["event_id"] for r in rows}) == 3 and rows[1]["server_request_id"] == "r2"
    assert all(b - a >= 0.19 for a, b in zip(calls, calls[1:], strict=False))  # waited as told


async def test_retries_are_off_by_default_and_4xx_is_not_retried(tmp_path: Path) -> None:
    answers = iter(
        [httpx.Response(503), httpx.Response(400, json={"error": {"message": "bad model"}})]
    )
    rows = await one(tmp_path, lambda r: next(answers), expected_operations=2)
    assert [(r["attempt"], r["error_type"]) for r in rows] == [
        (1, "server_error"),
        (1, "client_error"),
    ]


async def test_slow_headers_past_the_request_timeout(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(5)
        return stream_response(sse(openai_chunk("late")))

    (row,) = await one(tmp_path, handler, tgt={"request_timeout": "200ms"})
    assert (row["status"], row["error_type"], row["http_status"]) == ("timeout", "timeout", None)
    assert 150_000 <= row["latency_us"] < 4_000_000


async def test_connection_refused_is_a_connection_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    (row,) = await one(tmp_path, handler)
    assert (row["status"], row["error_type"]) == ("error", "connection")


async def test_error_bodies_echoing_the_key_are_scrubbed(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["authorization"]
        return httpx.Response(
            401, json={"error": {"message": f"Incorrect API key provided: {echoed}"}}
        )

    (row,) = await one(tmp_path, handler)
    assert row["error_type"] == "client_error" and row["http_status"] == 401
    assert KEY not in row["error_message"] and "***" in row["error_message"]
    assert KEY not in json.dumps(runs(tmp_path / "data").to_dicts(), default=str)


async def test_anthropic_stream_usage_and_tool_use(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        events: list[dict[str, Any]] = [
            {
                "type": "message_start",
                "message": {
                    "usage": {"input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 1}
                },
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "t",
                    "name": "get_weather",
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"city"'},
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            },
            {"type": "message_stop"},
        ]
        body = b"".join(
            b"event: " + e["type"].encode() + b"\n" + sse(e, done=False) for e in events
        )
        return stream_response(body, **{"request-id": "req_ant"})

    tgt = {"provider": "anthropic", "model": "claude-x", "base_url": "http://anthropic.test"}
    (row,) = await one(tmp_path, handler, tgt=tgt, tools_required=True)
    assert str(seen[0].url) == "http://anthropic.test/v1/messages"
    assert seen[0].headers["x-api-key"] == KEY and seen[0].headers["anthropic-version"]
    assert "authorization" not in seen[0].headers
    assert row["status"] == "ok" and len(row["chunk_offsets_us"]) == 2 and row["tool_calls"] == 1
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (12, 9, 7)
    assert row["server_request_id"] == "req_ant"


async def test_anthropic_overloaded_in_stream_and_missing_stop(tmp_path: Path) -> None:
    bodies = iter(
        [
            sse(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                done=False,
            ),
            sse(
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}},
                done=False,
            ),
        ]
    )
    tgt = {"provider": "anthropic", "model": "claude-x"}
    rows = await one(
        tmp_path, lambda r: stream_response(next(bodies)), tgt=tgt, expected_operations=2
    )
    assert [r["error_type"] for r in rows] == ["server_error", "protocol"]
    assert "message_stop" in rows[1]["error_message"]


async def test_ollama_ndjson_split_anywhere_and_no_key_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [
        {"message": {"role": "assistant", "content": "Hi"}, "done": False},
        {"message": {"role": "assistant", "content": " there"}, "done": False},
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "prompt_eval_count": 6,
            "eval_count": 2,
        },
    ]
    raw = b"".join(json.dumps(x).encode() + b"\n" for x in lines)

    async def body() -> Any:
        for i in range(0, len(raw), 7):  # reads that split lines mid-way
            yield raw[i : i + 7]

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body())

    monkeypatch.delenv("EXEC_TEST_KEY")
    tgt = {"provider": "ollama", "model": "llama3", "api_key_env": None}
    (row,) = await one(tmp_path, handler, tgt=tgt)
    assert (
        str(seen[0].url) == "http://localhost:11434/api/chat"
        and "authorization" not in seen[0].headers
    )
    assert json.loads(seen[0].content)["options"] == {"num_predict": 8}
    assert row["status"] == "ok" and len(row["chunk_offsets_us"]) == 2
    assert (row["input_tokens"], row["output_tokens"], row["token_source"]) == (6, 2, "server")


def test_framers_keep_partial_lines_across_reads() -> None:
    body = b'event: x\r\ndata: {"a":1}\r\n\r\n: comment\ndata: line1\ndata: line2\n\ndata: tail'
    for size in (1, 3, 1000):
        framer = SseFramer()
        out = [p for i in range(0, len(body), size) for p in framer.feed(body[i : i + size])]
        assert out + framer.close() == [b'{"a":1}', b"line1\nline2", b"tail"]
    nd = NdjsonFramer()
    assert nd.feed(b'{"a":1}\n{"b"') == [b'{"a":1}'] and nd.feed(b":2}\n") == [b'{"b":2}']
    assert nd.close() == []


def test_scrub_and_retry_after() -> None:
    text = "key sk-abcdefghijkl, header Bearer tok123 and api_key=zzz9 and x-api-key: qq"
    cleaned = scrub(text, ("zzz9",))
    for secret in ("sk-abcdefghijkl", "tok123", "zzz9", "qq"):
        assert secret not in cleaned
    assert len(scrub("x" * 1000)) <= 200
    assert parse_retry_after("2") == 2.0 and parse_retry_after(None, "1500") == 1.5
    assert (
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
        and parse_retry_after("soon") is None
    )


async def test_cli_overrides_are_validated(tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    loaded = config([target()], [scenario()], tmp_path)
    with pytest.raises(ConfigError, match=r"concurrency_level"):
        await run(loaded, tmp_path / "data", ExecuteOptions(concurrency=500))


@pytest.mark.parametrize("provider", ["openai", "ollama"])
async def test_an_error_object_inside_a_stream_is_a_server_error(
    tmp_path: Path, provider: str
) -> None:
    error = {"error": {"message": "The server had an error while processing your request"}}
    if provider == "openai":
        body = sse(openai_chunk("Hel"), error, done=False)
        response = stream_response(body)
        tgt: dict[str, Any] = {}
    else:
        line = {
            "model": "llama3",
            "message": {"role": "assistant", "content": "Hel"},
            "done": False,
        }
        body = (json.dumps(line) + "\n" + json.dumps(error) + "\n").encode()
        response = httpx.Response(
            200, headers={"content-type": "application/x-ndjson"}, content=body
        )
        tgt = {"provider": "ollama", "model": "llama3", "api_key_env": None}
    (row,) = await one(tmp_path, lambda request: response, tgt=tgt)
    assert (row["status"], row["error_type"]) == ("error", "server_error")
    assert "error in stream" in row["error_message"]
    assert row["ttft_us"] is not None  # the content before the error was still timed
