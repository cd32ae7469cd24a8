"""Every provider against the project's mock server over real sockets on 127.0.0.1.

The server runs in the test's trio loop next to the runner, so the client really parses the
mock's OpenAI SSE, Anthropic SSE and Ollama NDJSON bytes, and every injected fault arrives the
way a real provider's would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stages.execute.load.plan import ExecuteOptions
from tests._execute_support import config, mock_server, requests, run, runs, scenario

KEY = "sk-test-HTTPKEY0123456789abcdef"
PROVIDERS = {
    "openai": {"base": "/v1", "key": True},
    "openai-compatible": {"base": "/v1", "key": False},
    "anthropic": {"base": "", "key": True},
    "ollama": {"base": "", "key": False},
}


def http_target(provider: str, base: str, **fields: Any) -> dict[str, Any]:
    spec = PROVIDERS[provider]
    out = {
        "name": provider,
        "provider": provider,
        "model": "mock-small",
        "base_url": base + str(spec["base"]),
        "request_timeout": "2s",
        **fields,
    }
    if spec["key"]:
        out["api_key_env"] = "EXEC_HTTP_KEY"
    return out


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXEC_HTTP_KEY", KEY)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
async def test_every_provider_streaming_and_not(tmp_path: Path, stream: bool, tools: bool) -> None:
    async with mock_server(output_tokens=6, seed=3) as base:
        targets = [http_target(p, base) for p in PROVIDERS]
        scn = scenario(
            expected_operations=4,
            concurrency_level=2,
            streaming_required=stream,
            tools_required=tools,
        )
        result = await run(config(targets, [scn], tmp_path), tmp_path / "data")
    assert result.status == "completed" and [p.ok for p in result.pairs] == [4, 4, 4, 4]
    frame = requests(tmp_path / "data")
    assert frame.height == 16 and set(frame["status"]) == {"ok"}
    for row in frame.to_dicts():
        assert row["streaming"] is stream and row["http_status"] == 200
        assert row["output_tokens"] == 6 and row["input_tokens"] >= 1, row
        assert row["token_source"] == "server", row
        # Ollama (like the real one) sends a whole tool call in one line.
        one_chunk = not stream or (tools and row["provider"] == "ollama")
        assert len(row["chunk_offsets_us"]) == (1 if one_chunk else 6), row
        assert 0 < row["ttft_us"] <= row["latency_us"] < 2_000_000
        assert row["tool_calls"] == (1 if tools else 0), row
        assert row["bytes_sent"] > 0 and row["bytes_received"] > 0
        if row["provider"] in ("openai", "openai-compatible", "anthropic"):
            assert row["server_request_id"], row
    finished = runs(tmp_path / "data").filter(kind="finished")
    assert finished.height == 4 and set(finished["status"]) == {"completed"}


EXPECTED = {
    # injected kind: (status, error_type, http status per provider or None)
    "rate_limit": ("error", "rate_limited", 429),
    "server_error": ("error", "server_error", 500),
    "unavailable": ("error", "server_error", None),
    "hang": ("timeout", "timeout", None),
    "cut": ("error", "protocol", 200),
    "malformed": ("error", "protocol", 200),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_every_injected_error_is_classified(tmp_path: Path, kind: str) -> None:
    knobs = {"error_injection_rate": 1.0, "error_kinds": [kind], "hang": "3s", "output_tokens": 4}
    async with mock_server(**knobs) as base:
        targets = [
            http_target(p, base, request_timeout="300ms") for p in ("openai", "anthropic", "ollama")
        ]
        scns = [
            scenario(name="stream", expected_operations=2, concurrency_level=2),
            scenario(name="whole", expected_operations=1, streaming_required=False),
        ]
        opts = ExecuteOptions(scenarios=("stream", "whole"))
        await run(config(targets, scns, tmp_path), tmp_path / "data", opts)
    status, error_type, http = EXPECTED[kind]
    frame = requests(tmp_path / "data")
    assert frame.height == 9
    for row in frame.to_dicts():
        assert (row["status"], row["error_type"]) == (status, error_type), row
        assert row["error_message"], row
        if http is not None:
            assert row["http_status"] == http, row
        elif kind == "unavailable":
            assert row["http_status"] in (503, 529), row
        if kind == "rate_limit":
            assert row["attempt"] == 1  # retries are off by default


async def test_retry_after_from_the_server_each_attempt_an_event(tmp_path: Path) -> None:
    knobs = {
        "error_injection_rate": 0.5,
        "error_kinds": ["rate_limit"],
        "retry_after": "50ms",
        "seed": 11,
    }
    async with mock_server(**knobs) as base:
        targets = [http_target("openai", base, max_retries=4)]
        await run(config(targets, [scenario(expected_operations=6)], tmp_path), tmp_path / "data")
    frame = requests(tmp_path / "data")
    assert frame.filter(attempt=1).height == 6 and frame.height > 6  # some were retried
    for index in set(frame["request_index"]):
        tries = frame.filter(request_index=index).sort("attempt").to_dicts()
        assert [t["attempt"] for t in tries] == list(range(1, len(tries) + 1))
        assert all(t["error_type"] == "rate_limited" for t in tries[:-1])
        for before, after in zip(tries, tries[1:], strict=False):
            assert (after["started_at"] - before["started_at"]).total_seconds() >= 0.04


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_a_server_that_closes_after_every_stream_fails_nothing(
    tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp's server promises keep-alive and closes after each stream; the next request,
    sent at once on the same connection, meets the close before any answer. The server never
    took it, so it goes out again on a new connection: no false connection errors, one event
    per request, and the resends counted."""
    monkeypatch.setenv("EXEC_HTTP_KEY", KEY)
    async with mock_server(mimic="llama.cpp", simulated_latency="1ms") as base:
        loaded = config(
            [http_target(provider, base)],
            [scenario(expected_operations=60, concurrency_level=1, max_tokens=4)],
            tmp_path,
        )
        result = await run(loaded, tmp_path / "data")
    frame = requests(tmp_path / "data")
    assert result.status == "completed" and frame.height == 60
    assert set(frame["status"]) == {"ok"}, frame.filter(frame["status"] != "ok")["error_message"]
    assert set(frame["attempt"]) == {1} and frame["reconnects"].max() == 1
    assert frame["reconnects"].sum() > 0  # the close did cross the next request on the wire


async def test_a_grammar_constrained_tool_call_as_llama_cpp_streams_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tool_choice: required` is sent, and a tool call streamed as llama.cpp (and vLLM) stream
    it (the name alone first, then argument fragments) is one call, timed from its first delta."""
    monkeypatch.setenv("EXEC_HTTP_KEY", KEY)
    async with mock_server(mimic="llama.cpp", output_tokens=4) as base:
        loaded = config(
            [http_target("openai-compatible", base)],
            [scenario(tools_required=True, tool_choice="required", expected_operations=2)],
            tmp_path,
        )
        await run(loaded, tmp_path / "data")
    frame = requests(tmp_path / "data")
    assert set(frame["status"]) == {"ok"} and set(frame["tool_calls"]) == {1}
    # the name-only delta and the 4 argument fragments are the content chunks
    assert {len(c) for c in frame["chunk_offsets_us"]} == {5}
    assert set(frame["output_tokens"]) == {4} and set(frame["output_token_rule"]) == {"server"}


async def test_a_server_without_stream_usage_is_counted_and_calibrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama-cpp-python sends no usage in streams: output is the content chunks (one token
    each), input the target's own count when it is asked once per prompt (`calibrate_tokens`),
    and both are marked as estimated; it ignores max_completion_tokens, which max_tokens_field
    works around."""
    monkeypatch.setenv("EXEC_HTTP_KEY", KEY)
    async with mock_server(mimic="llama-cpp-python") as base:
        targets = [
            http_target("openai-compatible", base, name="plain"),
            http_target("openai-compatible", base, name="calibrated", calibrate_tokens=True),
            http_target("openai", base, name="both", max_tokens_field="both"),
        ]
        loaded = config(targets, [scenario(expected_operations=3, max_tokens=6)], tmp_path)
        await run(loaded, tmp_path / "data")
    frame = requests(tmp_path / "data")
    by = {t: frame.filter(frame["target"] == t) for t in ("plain", "calibrated", "both")}
    true_input = (len("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n") + 3) // 4
    for name, rows in by.items():
        assert set(rows["status"]) == {"ok"} and set(rows["output_tokens"]) == {6}, name
        assert set(rows["output_token_rule"]) == {"chunks"} and set(rows["token_source"]) == {
            "estimated"
        }
    assert set(by["plain"]["input_tokens"]) == {2} and set(by["plain"]["input_token_rule"]) == {
        "chars/4"
    }
    assert set(by["calibrated"]["input_tokens"]) == {true_input}
    assert set(by["calibrated"]["input_token_rule"]) == {"calibrated"}
    started = runs(tmp_path / "data").filter(kind="started", target="calibrated")
    assert json.loads(started["token_calibration"][0]) == {
        "asked": 1,
        "input_tokens": {"0": true_input},
    }


async def test_a_server_that_ignores_the_token_cap_is_ended_and_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXEC_HTTP_KEY", KEY)
    async with mock_server(mimic="llama-cpp-python") as base:
        target = http_target("openai", base, request_timeout="0.3s")  # max_completion_tokens
        await run(config([target], [scenario(expected_operations=1)], tmp_path), tmp_path / "data")
    (row,) = requests(tmp_path / "data").to_dicts()
    assert row["status"] == "timeout" and "ignore the token cap" in row["error_message"]
    assert "max_tokens_field" in row["error_message"]


async def test_a_production_request_takes_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real sockets go through the lanes' own httpcore connections and the lean backend (arrival
    stamps, the wire meter), never through httpx's per-request machinery: if that path is ever
    taken silently (a changed httpx or httpcore), this fails instead of the client slowing."""
    import httpx

    from stages.execute.client.transport.backend import LeanTrioBackend

    async def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("httpx.AsyncClient.send was used by a production request")

    monkeypatch.setattr(httpx.AsyncClient, "send", forbidden)
    connects: list[str] = []
    real = LeanTrioBackend.connect_tcp

    async def counted(self: LeanTrioBackend, host: str, port: int, *args: Any, **kw: Any) -> Any:
        connects.append(host)
        return await real(self, host, port, *args, **kw)

    monkeypatch.setattr(LeanTrioBackend, "connect_tcp", counted)
    monkeypatch.setenv("EXEC_HTTP_KEY", KEY)
    async with mock_server() as base:
        loaded = config(
            [http_target(p, base) for p in PROVIDERS],
            [scenario(expected_operations=3, concurrency_level=1)],
            tmp_path,
        )
        await run(loaded, tmp_path / "data")
    frame = requests(tmp_path / "data")
    assert frame.height == 12 and set(frame["status"]) == {"ok"}
    assert connects == ["127.0.0.1"] * 4  # one kept-alive connection per target, ours
