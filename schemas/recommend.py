"""When each recommendation rule fires: the config's `[recommend]` table.

The defaults are written here once and documented in the README ("Recommendations"). Keys are
the field names; every value is checked here (finite, within its bounds), so a bad one is refused
with the field's name before any stage runs.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from schemas._base import Frozen

__all__ = ["RecommendSettings"]


class RecommendSettings(Frozen):
    """Thresholds of `recommend`'s rules, named after the rule they belong to."""

    model_config = ConfigDict(allow_inf_nan=False)

    min_events: int = Field(default=3, ge=1)
    """A rule on a share of attempts (`rate-limited`, `error-rate`) needs at least this many of
    the events it counts: one 429 is an anecdote, whatever share of a small run it is ..."""
    significance: float = Field(default=0.05, gt=0.0, lt=1.0)
    """... and a one-sided exact binomial test that the true share is above the rule's
    threshold with a p-value at most this."""
    rate_limited_share: float = Field(default=0.01, ge=0.0, lt=1.0)
    """`rate-limited` fires when the share of attempts that got HTTP 429 is significantly above
    this (0: any 429s, at least `min_events` of them) ..."""
    rate_limited_high: float = Field(default=0.05, ge=0.0, le=1.0)
    """... and is high priority when significantly above this share (medium otherwise)."""
    error_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    """`error-rate` fires when failures other than 429 are significantly above this share."""
    tail_ratio: float = Field(default=3.0, ge=1.0)
    """`tail-latency` fires when p99 latency is at least this many times p50 ..."""
    tail_min_requests: int = Field(default=100, ge=1)
    """... over at least this many successful requests: the p99 of fewer than 100 is the
    slowest one or two of them, so one slow request would make a "heavy tail"."""
    knee_min_concurrencies: int = Field(default=3, ge=2)
    """`saturation-knee` needs runs at this many concurrencies of one scenario and target ..."""
    knee_throughput_gain: float = Field(default=0.10, ge=-1.0)
    """... and, from one concurrency to the next, throughput growing by less than this ..."""
    knee_latency_growth: float = Field(default=0.25, ge=0.0)
    """... while p50 latency grows by more than this."""
    cheaper_cost_ratio: float = Field(default=0.7, gt=0.0, le=1.0)
    """`cheaper-target`: another target costs at most this fraction per request ..."""
    cheaper_latency_ratio: float = Field(default=1.1, gt=0.0)
    """... with a p95 latency at most this multiple of the current target's ..."""
    cheaper_error_margin: float = Field(default=0.01, ge=0.0, le=1.0)
    """... and an error rate at most this much (absolute, 0.01 = 1 point) above it."""
    streaming_ttft_ratio: float = Field(default=0.9, gt=0.0, le=1.0)
    """`enable-streaming` fires when TTFT p50 is at least this fraction of latency p50 ..."""
    streaming_min_output_tokens: float = Field(default=20.0, ge=0.0)
    """... with at least this many output tokens per request (a short answer gains nothing)."""
    caching_min_input_tokens: float = Field(default=1024.0, ge=0.0)
    """`prompt-caching` fires from this many input tokens per request (OpenAI caches prompts
    from 1024 tokens on) ..."""
    caching_max_cached_share: float = Field(default=0.1, ge=0.0, le=1.0)
    """... when at most this share of them were served from cache."""
    client_memory_bytes: int = Field(default=1 << 30, ge=1)
    """`client-memory` fires when the client's peak RSS reaches this many bytes."""
