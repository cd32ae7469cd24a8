"""Token counts the client must estimate, and the rules it says it used.

A server that reports usage is always believed. One that does not (llama-cpp-python ignores
`stream_options.include_usage`; a stream cut short carries none) gets an estimate, and the event
says which rule made it (`input_token_rule`, `output_token_rule`):

- output, streamed: `chunks`, one token per content chunk. llama.cpp, vLLM, TGI, SGLang, Ollama
  and llama-cpp-python all stream one token per chunk; counted this way against llama-cpp-python
  the estimate was exact (16 for 16), where the older `max(chunks, characters / 4)` said 17.1.
- output, not streamed (one body, no chunks to count): `chars/4`.
- input: `calibrated` when the target was asked once how many tokens the prompt is
  (`TargetConfig.calibrate_tokens`), else `chars/4`: about four characters a token, which can be
  far off for a small vocabulary or a chat template (59 for a true 134 against a tiny model).
"""

from __future__ import annotations

__all__ = ["CHARS", "CHUNKS", "CALIBRATED", "SERVER", "estimate_tokens"]

SERVER = "server"
CALIBRATED = "calibrated"
CHUNKS = "chunks"
CHARS = "chars/4"


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one when there is any text."""
    return (len(text) + 3) // 4
