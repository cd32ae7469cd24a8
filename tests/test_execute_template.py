"""The content-chunk fast path (`ContentTemplate`) decides exactly what `json.loads` would.

Each provider reads a random stream twice: once as it runs (a learned envelope lets later
chunks skip `json.loads`) and once with the envelope forgotten before every payload (every
payload parsed). The attempts must agree field by field. The payloads mix real envelopes with
random text (escapes, quotes, non-ASCII, control characters), the same envelope with its text
replaced by arbitrary bytes (invalid UTF-8, `"`, `\\`), usage/finish/error chunks, and garbage.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import TargetConfig
from stages.execute.client.providers import ProviderSettings
from stages.execute.client.providers.anthropic import AnthropicProvider
from stages.execute.client.providers.base import Attempt
from stages.execute.client.providers.http import HttpProvider
from stages.execute.client.providers.ollama import OllamaProvider
from stages.execute.client.providers.openai import OpenAIProvider
from stages.execute.client.template import ContentTemplate


def _provider(cls: type[HttpProvider], kind: str) -> HttpProvider:
    # Never sends: the tests feed its parsing code payloads directly.
    target = TargetConfig.model_validate({"name": "t", "provider": kind, "model": "m"})
    return cls(ProviderSettings(target, None, 1, 5.0))


PROVIDERS = {
    "openai": _provider(OpenAIProvider, "openai"),
    "anthropic": _provider(AnthropicProvider, "anthropic"),
    "ollama": _provider(OllamaProvider, "ollama"),
}

plain = st.text(st.characters(min_codepoint=32, max_codepoint=0x3FF), min_size=1, max_size=8)
texts = plain | plain | st.text(max_size=12) | st.sampled_from(["", 'a"b', "a\\b", "\n", "\x00"])


def _openai(text: str, extra: dict[str, Any], kind: int) -> dict[str, Any]:
    delta: dict[str, Any] = {"content": text}
    if kind == 1:
        delta["tool_calls"] = [{"index": 0, "function": {"arguments": text}}]
    if kind == 2:
        delta = {"reasoning_content": text}
    chunk: dict[str, Any] = {"id": "c1", "choices": [{"index": 0, "delta": delta}], **extra}
    if kind == 3:
        chunk["usage"] = {"prompt_tokens": 3, "completion_tokens": 2}
    if kind == 4:
        chunk = {"error": {"message": text}}
    return chunk


def _anthropic(text: str, extra: dict[str, Any], kind: int) -> dict[str, Any]:
    delta_type, field = [
        ("text_delta", "text"),
        ("thinking_delta", "thinking"),
        ("input_json_delta", "partial_json"),
        ("text_delta", "content"),
        ("text_delta", "text"),
    ][kind]
    event = {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, field: text}}
    return {**event, **extra} if kind != 4 else {"type": "message_stop", **extra}


def _ollama(text: str, extra: dict[str, Any], kind: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if kind == 1:
        message["tool_calls"] = [{"function": {"name": "f", "arguments": {}}}]
    if kind == 2:
        message = {"role": "assistant", "content": "", "thinking": text}
    line = {"model": "m", "message": message, "done": kind == 3, **extra}
    return line if kind != 4 else {"error": text}


SHAPES = {"openai": _openai, "anthropic": _anthropic, "ollama": _ollama}
extras: st.SearchStrategy[dict[str, str]] = st.just({}) | st.dictionaries(
    st.sampled_from(["model", "content", "text"]), texts, max_size=2
)


@st.composite
def payloads(draw: st.DrawFn, provider: str) -> list[bytes]:
    # mostly one envelope per stream, as servers send it; sometimes a new one
    extra, ascii_only = draw(extras), draw(st.booleans())
    seps = draw(st.sampled_from([(",", ":"), (",", ":"), (",", ":"), (", ", ": ")]))
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 10))):
        choice = draw(st.integers(0, 9))
        if choice <= 5 or not out:
            if choice == 0:
                extra, ascii_only = draw(extras), draw(st.booleans())
            kind = draw(st.sampled_from([0, 0, 0, 1, 2, 3, 4]))
            obj = SHAPES[provider](draw(texts), extra, kind)
            out.append(json.dumps(obj, ensure_ascii=ascii_only, separators=seps).encode())
        elif choice <= 8:
            # a previous payload with some span replaced by arbitrary bytes
            base = draw(st.sampled_from(out))
            i = draw(st.integers(0, len(base)))
            j = draw(st.integers(i, len(base)))
            out.append(base[:i] + draw(st.binary(max_size=6)) + base[j:])
        else:
            out.append(draw(st.binary(max_size=20)) or b"[DONE]")
    return out


def _read(provider: HttpProvider, stream: list[bytes], fast: bool) -> tuple[Any, ...]:
    attempt = Attempt()
    state = provider.new_state()
    stops = []
    for n, payload in enumerate(stream):
        if not fast:
            state.template = None
        stops.append(provider.on_payload(payload, n + 1, state, attempt))
        if stops[-1]:
            break
    provider.on_stream_end(state, attempt)
    return (
        stops,
        attempt.chunk_ns,
        attempt.text_chars,
        attempt.tool_calls,
        attempt.status,
        attempt.error_type,
        attempt.error_message,
        attempt.input_tokens,
        attempt.output_tokens,
        attempt.cached_tokens,
        state.done,
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), provider=st.sampled_from(sorted(PROVIDERS)))
def test_the_fast_path_agrees_with_json_parsing(data: st.DataObject, provider: str) -> None:
    stream = data.draw(payloads(provider))
    impl = PROVIDERS[provider]
    assert _read(impl, stream, fast=True) == _read(impl, stream, fast=False)


def test_the_envelope_is_learned_and_matched() -> None:
    openai = PROVIDERS["openai"]
    first = b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null}'
    state = openai.new_state()
    attempt = Attempt()
    assert openai.on_payload(first, 1, state, attempt) is False
    assert state.template is not None
    template = state.template
    assert template.match(first.replace(b"Hel", "lö wörld".encode())) == len("lö wörld")
    for other in (b"Hel\\n", b'a"b', b"", b"\xff", b"a\x01"):
        assert template.match(first.replace(b"Hel", other)) == -1
    # not learned where the key is ambiguous or escaped
    assert ContentTemplate.learn(b'{"content":"a","x":{"content":"a"}}', b"content", "a") is None
    assert ContentTemplate.learn(b'{"content":"a\\u0041"}', b"content", "aA") is None
