"""Protocol edge cases through the whole execute path, answered by a real server on 127.0.0.1.

Each test scripts the exact bytes the server answers (`tests/hostile_server.py`'s `Canned`), runs
the runner inside the test's trio loop and reads the `requests` events back from the log, so
what is asserted is what `aggregate` will see, and every byte went through what production uses:
the lanes' httpcore connections, the lean trio backend, httpcore's HTTP/1.1 parsing (h11).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from schemas import TargetConfig
from stages.execute.client.framing import NdjsonFramer, SseFramer
from stages.execute.client.providers import ProviderSettings, build_provider
from stages.execute.client.providers.http import HttpProvider
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
from tests.hostile_server import Canned, Mode, Seen, hostile_server

KEY = "sk-test-PROTOCOLKEY0123456789"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
"""Where each provider sends, below the server's root (the OpenAI base URL ends in /v1)."""
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXEC_TEST_KEY", KEY)


async def one(
    tmp_path: Path, *replies: Mode, tgt: dict[str, Any] | None = None, **scn: Any
) -> tuple[list[dict[str, Any]], list[Seen]]:
    """Run one target (OpenAI unless `tgt` says) for one request unless `scn` says, against a
    server that answers its requests with `replies` in order; the events and what arrived."""
    fields = {"provider": "openai", **(tgt or {})}
    provider = fields["provider"]
    async with hostile_server() as (root, server):
        server.script(PATHS[provider], *replies)
        base = root + "/v1" if provider == "openai" else root
        loaded = config(
            [target(base_url=base, **fields)],
            [scenario(**{"expected_operations": 1, **scn})],
            tmp_path,
        )
        await run(loaded, tmp_path / "data")
    return requests(tmp_path / "data").to_dicts(), server.seen


async def test_openai_stream_with_usage_tools_and_request_id(tmp_path: Path) -> None:
    call = {"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}}
    body = sse(
        openai_chunk(role="assistant"),
        openai_chunk("Hel"),
        openai_chunk("lo"),
        openai_chunk(tool_calls=[call]),
        openai_chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]),
        OPENAI_USAGE,
    )
    reply = Canned.stream(body, headers={"x-request-id": "req_abc"})
    (row,), seen = await one(tmp_path, reply, tools_required=True, system_prompt="Be brief.")
    sent = json.loads(seen[0].body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert (
        sent["max_completion_tokens"] == 8 and sent["tools"][0]["function"]["name"] == "get_weather"
    )
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert row["status"] == "ok" and row["error_type"] is None and row["http_status"] == 200
    assert len(row["chunk_offsets_us"]) == 4  # role-only and usage chunks carry no content
    assert row["ttft_us"] == row["chunk_offsets_us"][0] <= row["latency_us"]
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (11, 3, 4)
    assert row["token_source"] == "server" and row["tool_calls"] == 1
    assert row["server_request_id"] == "req_abc"
    # The body's bytes exactly: the status line, the headers and the chunked framing (sizes,
    # CRLFs, the last chunk) crossed the wire too, but h11 strips them before the client reads.
    assert row["bytes_sent"] == len(seen[0].body) and row["bytes_received"] == len(body)


async def test_missing_usage_is_estimated(tmp_path: Path) -> None:
    reply = Canned.stream(sse(openai_chunk("abcdefgh"), openai_chunk("ijkl")))
    (row,), _ = await one(tmp_path, reply)
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
    (row,), _ = await one(tmp_path, Canned.stream(body))
    assert (row["status"], row["error_type"], row["http_status"]) == ("error", "protocol", 200)
    assert message in row["error_message"]


async def test_stream_cut_mid_way_by_the_connection(tmp_path: Path) -> None:
    cut = replace(Canned.stream(sse(openai_chunk("a"), done=False)), cut=True)
    (row,), _ = await one(tmp_path, cut)
    # h11's own words for a chunked body whose connection closed before its last chunk.
    assert row["error_type"] == "protocol" and "peer closed" in row["error_message"]
    assert "incomplete chunked read" in row["error_message"]
    assert len(row["chunk_offsets_us"]) == 1 and row["token_source"] == "estimated"


async def test_non_stream_empty_choices_and_missing_usage(tmp_path: Path) -> None:
    rows, seen = await one(
        tmp_path,
        Canned.whole(200, {"id": "x", "choices": []}),
        Canned.whole(200, {"choices": [{"message": {"content": "Hi there!"}}]}),
        Canned.whole(200, b"<html>oops</html>", {"content-type": "text/html"}),
        streaming_required=False,
        expected_operations=3,
    )
    assert [r["error_type"] for r in rows] == ["protocol", None, "protocol"]
    ok = rows[1]
    assert ok["streaming"] is False and ok["ttft_us"] == ok["latency_us"]
    assert ok["token_source"] == "estimated" and ok["output_tokens"] == 3
    assert all(json.loads(s.body)["stream"] is False for s in seen)


async def test_429_retry_after_is_honoured_and_each_attempt_is_an_event(tmp_path: Path) -> None:
    def limited(number: int) -> Canned:
        body = {"error": {"message": "Rate limit reached", "type": "requests"}}
        return Canned.whole(429, body, {"retry-after": "0.2", "x-request-id": f"r{number}"})

    stream = Canned.stream(sse(openai_chunk("ok"), OPENAI_USAGE))
    rows, seen = await one(tmp_path, limited(1), limited(2), stream, tgt={"max_retries": 3})
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert [r["status"] for r in rows] == ["error", "error", "ok"]
    assert [r["http_status"] for r in rows] == [429, 429, 200]
    assert (
        rows[0]["error_type"] == "rate_limited" and "Rate limit reached" in rows[0]["error_message"]
    )
    assert len({r["event_id"] for r in rows}) == 3 and rows[1]["server_request_id"] == "r2"
    calls = [s.at for s in seen]  # when each attempt reached the server
    assert len(calls) == 3 and all(b - a >= 0.19 for a, b in zip(calls, calls[1:], strict=False))


async def test_retries_are_off_by_default_and_4xx_is_not_retried(tmp_path: Path) -> None:
    rows, seen = await one(
        tmp_path,
        Canned.whole(503, b""),
        Canned.whole(400, {"error": {"message": "bad model"}}),
        expected_operations=2,
    )
    assert [(r["attempt"], r["error_type"]) for r in rows] == [
        (1, "server_error"),
        (1, "client_error"),
    ]
    assert len(seen) == 2 and "bad model" in rows[1]["error_message"]


async def test_slow_headers_past_the_request_timeout(tmp_path: Path) -> None:
    late = replace(Canned.stream(sse(openai_chunk("late"))), delay_s=5)
    (row,), _ = await one(tmp_path, late, tgt={"request_timeout": "200ms"})
    assert (row["status"], row["error_type"], row["http_status"]) == ("timeout", "timeout", None)
    assert 150_000 <= row["latency_us"] < 4_000_000


@contextmanager
def _refusing_port() -> Iterator[int]:
    """A port of 127.0.0.1 that is bound but not listening, so a connect to it is refused (and
    no other process can take the port while the test runs, as it could after a close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_connection_refused_is_a_connection_error(tmp_path: Path) -> None:
    with _refusing_port() as port:
        loaded = config(
            [target(base_url=f"http://127.0.0.1:{port}/v1")],
            [scenario(expected_operations=1)],
            tmp_path,
        )
        await run(loaded, tmp_path / "data")
    (row,) = requests(tmp_path / "data").to_dicts()
    assert (row["status"], row["error_type"], row["http_status"]) == ("error", "connection", None)
    assert "ConnectError" in row["error_message"] and "refused" in row["error_message"]
    assert row["bytes_received"] == 0 and row["ttft_us"] is None


async def test_error_bodies_echoing_the_key_are_scrubbed(tmp_path: Path) -> None:
    """A careless server repeats the credential it was sent, in its error body and as its
    request id (the whole head echoed back is `tests/test_secrets.py`'s case)."""
    said = {"error": {"message": f"Incorrect API key provided: Bearer {KEY}"}}
    echo = Canned.whole(401, said, {"x-request-id": KEY})
    (row,), seen = await one(tmp_path, echo)
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert row["error_type"] == "client_error" and row["http_status"] == 401
    assert KEY not in row["error_message"] and "***" in row["error_message"]
    assert row["server_request_id"] == "***"
    assert KEY not in json.dumps(runs(tmp_path / "data").to_dicts(), default=str)


async def test_anthropic_stream_usage_and_tool_use(tmp_path: Path) -> None:
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
    body = b"".join(b"event: " + e["type"].encode() + b"\n" + sse(e, done=False) for e in events)
    reply = Canned.stream(body, headers={"request-id": "req_ant"})
    tgt = {"provider": "anthropic", "model": "claude-x"}
    (row,), seen = await one(tmp_path, reply, tgt=tgt, tools_required=True)
    # The base URL is the server's root (as Anthropic's is, without /v1): the path is joined.
    assert seen[0].path == "/v1/messages"
    assert seen[0].headers["x-api-key"] == KEY and seen[0].headers["anthropic-version"]
    assert "authorization" not in seen[0].headers
    assert row["status"] == "ok" and len(row["chunk_offsets_us"]) == 2 and row["tool_calls"] == 1
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (12, 9, 7)
    assert row["server_request_id"] == "req_ant"


async def test_anthropic_overloaded_in_stream_and_missing_stop(tmp_path: Path) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}
    rows, _ = await one(
        tmp_path,
        Canned.stream(sse(overloaded, done=False)),
        Canned.stream(sse(delta, done=False)),
        tgt={"provider": "anthropic", "model": "claude-x"},
        expected_operations=2,
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
    # One HTTP chunk per 7 bytes: each reaches the framer as a read of its own, lines split.
    reply = Canned(200, tuple(raw[i : i + 7] for i in range(0, len(raw), 7)), NDJSON)
    monkeypatch.delenv("EXEC_TEST_KEY")
    tgt = {"provider": "ollama", "model": "llama3", "api_key_env": None}
    (row,), seen = await one(tmp_path, reply, tgt=tgt)
    assert seen[0].path == "/api/chat" and "authorization" not in seen[0].headers
    assert json.loads(seen[0].body)["options"] == {"num_predict": 8}
    assert row["status"] == "ok" and len(row["chunk_offsets_us"]) == 2
    assert (row["input_tokens"], row["output_tokens"], row["token_source"]) == (6, 2, "server")
    assert row["bytes_received"] == len(raw)


@pytest.mark.parametrize(
    ("provider", "url"),
    [
        ("openai", "https://api.openai.com/v1/chat/completions"),
        ("anthropic", "https://api.anthropic.com/v1/messages"),
        ("ollama", "http://localhost:11434/api/chat"),
    ],
)
async def test_without_a_base_url_each_provider_sends_to_its_own_service(
    provider: str, url: str
) -> None:
    """Where a target without `base_url` sends: the URL every lane's request is built for. (The
    tests above point their targets at 127.0.0.1; no test may reach these hosts.)"""
    tgt = TargetConfig.model_validate({"name": "t", "provider": provider, "model": "m"})
    client = build_provider(ProviderSettings(tgt, None, 1, 5.0))
    try:
        assert isinstance(client, HttpProvider)
        assert str(client.lanes.url(client.path)) == url
    finally:
        await client.aclose()


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
        reply = Canned.stream(sse(openai_chunk("Hel"), error, done=False))
        tgt: dict[str, Any] = {}
    else:
        line = {
            "model": "llama3",
            "message": {"role": "assistant", "content": "Hel"},
            "done": False,
        }
        body = (json.dumps(line) + "\n" + json.dumps(error) + "\n").encode()
        reply = Canned.stream(body, split=b"\n", headers=NDJSON)
        tgt = {"provider": "ollama", "model": "llama3", "api_key_env": None}
    (row,), _ = await one(tmp_path, reply, tgt=tgt)
    assert (row["status"], row["error_type"]) == ("error", "server_error")
    assert "error in stream" in row["error_message"]
    assert row["ttft_us"] is not None  # the content before the error was still timed
