"""What runs with no config at all: mock targets, the built-in scenarios, the shipped price table.

Every command works on a fresh machine with no network and no keys because of this file.
"""

from __future__ import annotations

from datetime import date
from typing import Any

__all__ = ["BUILTIN_SCENARIOS", "DEFAULT_CONFIG", "PRICES", "PRICES_AS_OF"]

_WEATHER_PROMPTS = [
    "What is the weather in Paris right now? Use the tool.",
    "Look up the weather in Tokyo and tell me if I need an umbrella.",
]
_LONG_CONTEXT = (
    "You are given a long report. Summarise its key points in three bullets.\n\n"
    + " ".join(
        f"Section {i}: the quarterly figures show steady growth in region {i % 7}, with costs "
        f"held flat and customer satisfaction up by {i % 5} points."
        for i in range(120)
    )
)

BUILTIN_SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "quickstart",
        "description": "A few short answers, streamed: a smoke test of every target",
        "test_prompts": ["What is the capital of France?", "Write a haiku about rain."],
        "expected_operations": 20,
        "concurrency_level": 4,
        "timeout_duration": "30s",
        "streaming_required": True,
        "max_tokens": 32,
        "tags": ["builtin"],
    },
    {
        "name": "chat-stream",
        "description": "Short chat answers, streamed, at moderate concurrency",
        "test_prompts": [
            "Explain what a hash map is in two sentences.",
            "Give me three names for a grey cat.",
            "Translate 'good morning' into Spanish, French and German.",
            "What is 17 times 23? Answer with the number only.",
        ],
        "expected_operations": 100,
        "concurrency_level": 8,
        "timeout_duration": "120s",
        "streaming_required": True,
        "max_tokens": 64,
        "warmup": 2,
        "tags": ["builtin"],
    },
    {
        "name": "tool-calling",
        "description": "Requests that should call a get_weather tool",
        "test_prompts": _WEATHER_PROMPTS,
        "expected_operations": 40,
        "concurrency_level": 4,
        "timeout_duration": "120s",
        "tools_required": True,
        "streaming_required": True,
        "max_tokens": 64,
        "tags": ["builtin"],
    },
    {
        "name": "long-prompt",
        "description": "A ~3k-token prompt and a short answer: prefill-heavy, TTFT-sensitive",
        "test_prompts": [_LONG_CONTEXT],
        "expected_operations": 20,
        "concurrency_level": 2,
        "timeout_duration": "180s",
        "streaming_required": True,
        "max_tokens": 128,
        "tags": ["builtin"],
    },
    {
        "name": "load-test",
        "description": "Open loop: Poisson arrivals at 20 req/s for 30 s after a 5 s ramp-up",
        "test_prompts": ["Write one sentence about the sea.", "Name a prime number above 100."],
        "expected_operations": 600,
        "concurrency_level": 100,
        "timeout_duration": "60s",
        "streaming_required": True,
        "max_tokens": 32,
        "rate": 20.0,
        "arrival": "poisson",
        "ramp_up": "5s",
        "duration": "30s",
        "tags": ["builtin"],
    },
]

DEFAULT_CONFIG: dict[str, Any] = {
    "targets": [
        {
            "name": "mock-fast",
            "provider": "mock",
            "model": "mock-small",
            "mock": {
                "simulated_latency": "20ms",
                "token_generation_rate": 400,
                "error_injection_rate": 0.02,
                "response_variability": 0.1,
                "concurrency_limit": 50,
                "memory_usage_simulation": 262144,
                "seed": 1,
            },
        },
        {
            "name": "mock-slow",
            "provider": "mock",
            "model": "mock-large",
            "mock": {
                "simulated_latency": "60ms",
                "token_generation_rate": 150,
                "error_injection_rate": 0.05,
                "response_variability": 0.2,
                "concurrency_limit": 50,
                "memory_usage_simulation": 1048576,
                "seed": 2,
            },
        },
    ],
    "default_scenarios": ["quickstart"],
}

# USD per million tokens: input, output, cached input. Public list prices; check before trusting.
PRICES_AS_OF = date(2026, 11, 1)
PRICES: dict[str, dict[str, float]] = {
    "gpt-4o": {"input": 2.50, "output": 10.00, "cached_input": 1.25},
    "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
    "gpt-4.1": {"input": 2.00, "output": 8.00, "cached_input": 0.50},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60, "cached_input": 0.10},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40, "cached_input": 0.025},
    "o3": {"input": 2.00, "output": 8.00, "cached_input": 0.50},
    "o4-mini": {"input": 1.10, "output": 4.40, "cached_input": 0.275},
    "gpt-5": {"input": 1.25, "output": 10.00, "cached_input": 0.125},
    "gpt-5-mini": {"input": 0.25, "output": 2.00, "cached_input": 0.025},
    "gpt-5-nano": {"input": 0.05, "output": 0.40, "cached_input": 0.005},
    "claude-opus-4-1": {"input": 15.00, "output": 75.00, "cached_input": 1.50},
    "claude-sonnet-4-5": {"input": 3.00, "output": 15.00, "cached_input": 0.30},
    "claude-sonnet-4": {"input": 3.00, "output": 15.00, "cached_input": 0.30},
    "claude-haiku-4-5": {"input": 1.00, "output": 5.00, "cached_input": 0.10},
    "claude-3-5-haiku": {"input": 0.80, "output": 4.00, "cached_input": 0.08},
    # The built-in mock models are priced so that cost columns are exercised end to end.
    "mock-small": {"input": 0.10, "output": 0.40, "cached_input": 0.05},
    "mock-large": {"input": 1.00, "output": 4.00, "cached_input": 0.50},
}
