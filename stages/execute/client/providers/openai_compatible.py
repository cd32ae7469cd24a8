"""Any server that speaks the OpenAI Chat Completions API: vLLM, llama.cpp, LM Studio, TGI, SGLang.

It is the OpenAI client with two differences: `base_url` is required (the registry says so) and
the key is optional; and the token limit goes in `max_tokens`, the name these servers all read.
"""

from __future__ import annotations

from typing import ClassVar

from stages.execute.client.providers.openai import OpenAIProvider

__all__ = ["OpenAICompatibleProvider"]


class OpenAICompatibleProvider(OpenAIProvider):
    kind: ClassVar[str] = "openai-compatible"
    default_base_url: ClassVar[str] = "http://localhost:8000/v1"
    max_tokens_field: ClassVar[str] = "max_tokens"
