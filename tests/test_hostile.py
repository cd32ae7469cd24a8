"""Every HTTP provider against a hostile server, the same way: one abstract suite, one subclass
per provider (as eventsourcing's persistence tests run one suite against every store).

Each case runs the real execute path (real sockets on 127.0.0.1, the production lanes and
backend) for three requests, of which the second meets the misbehaviour, and asserts what a user
relies on: the run completes, there is exactly one event per attempt, the bad one has the right
`error_type` and a short storable message, the requests around it are ok, and the client's
memory stayed bounded while it happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import psutil
import pytest

from pipeline.store.eventlog import EventLog
from stages.execute.client.taxonomy import MAX_MESSAGE
from tests._execute_support import config, requests, run, scenario
from tests.hostile_server import PAYLOAD_MODES, TRANSPORT_MODES, hostile_server

KEY = "sk-hostile-canary-0123456789abcdef"
LIMITS = {"max_response_bytes": 8 << 20, "max_line_bytes": 1 << 20, "max_event_bytes": 2 << 20}
RSS_BOUND = 200 << 20
"""What one bad reply may add to the client's peak RSS (the test limits allow 8 MiB)."""

EXPECTED: dict[str, str | None] = {
    "garbage": "protocol",
    "endless_headers": "protocol",
    "headers_then_close": "protocol",
    "cut_mid_chunk": "protocol",
    "bad_chunk_size": "protocol",
    "redirect": "client_error",
    "odd_status": "server_error",
    "trickle": "timeout",
    "hang": "timeout",
    "endless_stream": "protocol",
    "endless_lines": "protocol",
    "huge_line": "protocol",
    "invalid_utf8": "protocol",
    "invalid_json": "protocol",
    "gzip_bomb": "protocol",
    "endless_error": "server_error",
    "surrogate_error": "client_error",
    "keep_open": None,
    "many_tool_calls": None,
    **dict.fromkeys(PAYLOAD_MODES, "protocol"),
}
WHOLE_BODY_MODES = (
    "endless_stream",
    "gzip_bomb",
    *(m for m in PAYLOAD_MODES if m != "tool_index_list"),
)
"""Modes that also apply to a non-streamed response (one JSON body)."""


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTILE_KEY", KEY)


class HostileSuite:
    """What every provider must survive; a subclass says how to point it at the server."""

    provider: ClassVar[str]
    payload_modes: ClassVar[tuple[str, ...]] = (
        "usage_string",
        "usage_inf",
        "usage_1e30",
        "usage_negative",
        "shape",
        "text_number",
    )

    def base_url(self, root: str, mode: str) -> str:
        raise NotImplementedError

    def target(self, root: str, mode: str) -> dict[str, Any]:
        return {
            "name": "hostile",
            "provider": self.provider,
            "model": "m",
            "base_url": self.base_url(root, mode),
            "api_key_env": "HOSTILE_KEY",
            # The modes that run into it wait for it; the rest must finish well inside it.
            "request_timeout": "0.75s" if mode in ("hang", "trickle") else "1.5s",
            "limits": LIMITS,
        }

    async def check(self, tmp_path: Path, mode: str, *, streaming: bool) -> list[dict[str, Any]]:
        data = tmp_path / "data"
        before = psutil.Process().memory_info().rss
        async with hostile_server() as (root, _server):
            loaded = config(
                [self.target(root, mode)],
                [
                    scenario(
                        expected_operations=3,
                        streaming_required=streaming,
                        tools_required=mode == "many_tool_calls",
                    )
                ],
                tmp_path,
            )
            result = await run(loaded, data)
        assert result.status == "completed"
        rows = requests(data).to_dicts()
        assert [(r["request_index"], r["attempt"]) for r in rows] == [(0, 1), (1, 1), (2, 1)]
        good = [rows[0], rows[2]]
        assert all(r["status"] == "ok" and r["error_type"] is None for r in good), good
        bad = rows[1]
        expected = EXPECTED[mode]
        assert bad["error_type"] == expected, bad
        if expected is not None:
            assert bad["status"] != "ok" and bad["error_message"]
            assert len(bad["error_message"]) <= MAX_MESSAGE
        for row in rows:
            assert row["input_tokens"] is None or 0 <= row["input_tokens"] < 1 << 40
            assert row["output_tokens"] is None or 0 <= row["output_tokens"] < 1 << 40
        samples = EventLog(data).replay("samples").collect()
        peak = samples["rss_bytes"].max()
        assert isinstance(peak, int) and peak - before < RSS_BOUND, (peak, before)
        return rows

    @pytest.mark.parametrize("mode", sorted(TRANSPORT_MODES))
    async def test_streamed_reply(self, tmp_path: Path, mode: str) -> None:
        rows = await self.check(tmp_path, mode, streaming=True)
        if mode == "many_tool_calls":
            assert rows[1]["tool_calls"] == 5000
        if mode == "keep_open":  # complete at its end marker, not timed out at 1.5 s
            assert rows[1]["status"] == "ok" and rows[1]["latency_us"] < 1_000_000

    @pytest.mark.parametrize("mode", PAYLOAD_MODES)
    async def test_streamed_payload_out_of_shape(self, tmp_path: Path, mode: str) -> None:
        if mode not in self.payload_modes:
            pytest.skip(f"{mode} has no {self.provider} form")
        rows = await self.check(tmp_path, mode, streaming=True)
        assert "Traceback" not in (rows[1]["error_message"] or "")

    @pytest.mark.parametrize("mode", WHOLE_BODY_MODES)
    async def test_whole_body(self, tmp_path: Path, mode: str) -> None:
        if mode in PAYLOAD_MODES and mode not in self.payload_modes:
            pytest.skip(f"{mode} has no {self.provider} form")
        await self.check(tmp_path, mode, streaming=False)


class TestOpenAI(HostileSuite):
    provider = "openai"
    payload_modes = (*HostileSuite.payload_modes, "tool_index_list")

    def base_url(self, root: str, mode: str) -> str:
        return f"{root}/{mode}/v1"


class TestOpenAICompatible(TestOpenAI):
    provider = "openai-compatible"


class TestAnthropic(HostileSuite):
    provider = "anthropic"

    def base_url(self, root: str, mode: str) -> str:
        return f"{root}/{mode}"


class TestOllama(HostileSuite):
    provider = "ollama"

    def base_url(self, root: str, mode: str) -> str:
        return f"{root}/{mode}"


async def test_the_defaults_bound_an_endless_stream(tmp_path: Path) -> None:
    """Without test limits: the shipped `max_response_bytes` ends an endless stream too."""
    data = tmp_path / "data"
    async with hostile_server() as (root, _server):
        target = {**TestOpenAI().target(root, "endless_stream"), "request_timeout": "60s"}
        del target["limits"]
        await run(config([target], [scenario(expected_operations=2)], tmp_path), data)
    bad = requests(data).filter(pl.col("request_index") == 1).row(0, named=True)
    assert (
        bad["error_type"] == "protocol" and "max_response_bytes (67108864)" in bad["error_message"]
    )
    assert 64 << 20 < bad["bytes_received"] < 66 << 20
