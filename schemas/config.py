"""The TOML config as models: targets, scenarios, prices. Keys are the models' own field names.

Numbers are finite and bounded (prices, thresholds, weights): each ends up in a computed column
or a score, where an infinity becomes a NaN that no JSON or comparison can carry.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from schemas._base import Frozen
from schemas._types import Duration, SafeName, require_unique_names, shown
from schemas.recommend import RecommendSettings
from schemas.registry import ProviderName, get_provider
from schemas.scenario import BenchmarkScenario, MockConfiguration

__all__ = [
    "CompareSettings",
    "CompareWeights",
    "ModelPrice",
    "PipelineConfig",
    "ResponseLimits",
    "TargetConfig",
    "TrendSettings",
    "is_sensitive_header",
    "strip_userinfo",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: `$` would allow a final newline
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
"""An HTTP field name (RFC 9110 token)."""
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*\Z")
"""Visible ASCII, spaces and tabs: what every HTTP client sends as is (no CR/LF injection)."""
MAX_PRICE = 1_000_000.0
"""USD per million tokens: one dollar per token is past any real price."""
_MIB = 1024 * 1024


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"{shown(value)} is not an environment variable name")
    return value


class ResponseLimits(Frozen):
    """How much of a response the client will hold or parse before it gives up on the attempt
    (a protocol error): a server that never ends its body, a line or an event, or that sends
    one huge line, must cost bounded memory and linear time, not the whole request timeout."""

    max_response_bytes: int = Field(default=64 * _MIB, ge=1024, le=4096 * _MIB)
    """Bytes of one response body (streamed or not). A whole (non-streamed) body is held in
    memory up to this size; a stream is parsed as it comes and only counted."""
    max_line_bytes: int = Field(default=1 * _MIB, ge=256, le=1024 * _MIB)
    """Bytes of one SSE or NDJSON line (one token's chunk is ~200 bytes)."""
    max_event_bytes: int = Field(default=4 * _MIB, ge=256, le=1024 * _MIB)
    """Bytes of one SSE event (its `data:` lines together, until the blank line)."""


class TargetConfig(Frozen):
    """A provider endpoint + model under a name. Never holds a key: only its variable's name."""

    name: SafeName
    provider: ProviderName
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    mock: MockConfiguration | None = None
    max_retries: int = Field(default=0, ge=0, le=10)
    """Retries per request (each attempt is its own event); backoff honours retry-after."""
    request_timeout: Duration | None = None
    """Per-request timeout; default: the shorter of 60 s and the scenario's timeout_duration."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers, recorded with the run (values of auth-like names masked). Secrets
    belong in `secret_headers`."""
    secret_headers: dict[str, str] = Field(default_factory=dict)
    """Header name → the environment variable holding its value (like `api_key_env`): sent
    with every request, never recorded, scrubbed from every message whatever its shape."""
    limits: ResponseLimits = Field(default_factory=ResponseLimits)
    max_tokens_field: Literal["max_tokens", "max_completion_tokens", "both"] | None = None
    """OpenAI-style targets: the request field carrying the scenario's max_tokens. Default:
    `max_completion_tokens` for provider openai, `max_tokens` for openai-compatible (vLLM,
    llama.cpp, llama-cpp-python and TGI read it; llama-cpp-python ignores the other)."""
    calibrate_tokens: bool = False
    """Before a run, ask the target once per distinct prompt (non-streamed, max 1 token) how
    many input tokens it counts, for servers whose streams carry no usage."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in ("api_key", "key", "token")):
            raise ValueError(
                "api keys never go in the config: put the key in an environment variable "
                "and name that variable in api_key_env"
            )
        return data

    @field_validator("headers", "secret_headers")
    @classmethod
    def _http_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{shown(name)} is not an HTTP header name")
            if not _HEADER_VALUE.match(text):
                raise ValueError(f"header {shown(name)}: use visible ASCII (no line breaks)")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, value: str | None) -> str | None:
        return _env_name(value) if value is not None else None

    @field_validator("secret_headers")
    @classmethod
    def _secret_envs(cls, value: dict[str, str]) -> dict[str, str]:
        for item in value.values():
            _env_name(item)
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s]+\Z", value):
            raise ValueError(f"{shown(value)} is not an http(s) URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _kind_needs(self) -> TargetConfig:
        kind = get_provider(self.provider)
        if kind.needs_base_url and not self.base_url:
            raise ValueError(f"provider {self.provider!r} needs base_url")
        if self.mock is not None and self.provider != "mock":
            raise ValueError("mock settings are only for provider = 'mock'")
        if self.max_tokens_field is not None and self.provider not in (
            "openai",
            "openai-compatible",
        ):
            raise ValueError("max_tokens_field is only for providers openai and openai-compatible")
        clash = {n.lower() for n in self.headers} & {n.lower() for n in self.secret_headers}
        if clash:
            raise ValueError(
                f"header(s) {', '.join(sorted(clash))} in both headers and secret_headers"
            )
        return self

    def public_dict(self) -> dict[str, Any]:
        """The target as recorded with a run: no user-info in the URL (it may hold a password),
        auth-like header values masked, secret headers only by their variable's name."""
        data = self.model_dump(mode="json")
        if self.base_url is not None:
            data["base_url"] = strip_userinfo(self.base_url)
        data["headers"] = {
            name: ("***" if is_sensitive_header(name) else value)
            for name, value in self.headers.items()
        }
        return data


_SENSITIVE = ("authorization", "key", "token", "secret", "cookie", "auth", "password", "session")


def is_sensitive_header(name: str) -> bool:
    """A header whose name says it carries a credential: its value is masked and scrubbed."""
    lowered = name.lower()
    return any(word in lowered for word in _SENSITIVE)


def strip_userinfo(url: str) -> str:
    """`url` without `user:password@` (what the client sends as basic auth is not recorded)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class ModelPrice(Frozen):
    """USD per million tokens."""

    input: float = Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)
    output: float = Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)
    cached_input: float | None = Field(default=None, ge=0, le=MAX_PRICE, allow_inf_nan=False)
    as_of: date | None = None


class TrendSettings(Frozen):
    """Thresholds of `profile` (calibrated defaults; see the README's Trends section)."""

    min_change: float = Field(default=0.05, ge=0.0, le=1000.0, allow_inf_nan=False)
    """A direction needs at least this relative change over the window."""
    confidence_threshold: float = Field(default=0.99, gt=0.0, le=1.0, allow_inf_nan=False)
    """...and at least this one-sided Mann-Kendall confidence."""
    step_p: float = Field(default=0.001, gt=0.0, lt=1.0, allow_inf_nan=False)
    """A change point needs a Welch p-value at most this."""
    min_points: int = Field(default=3, ge=2, le=100_000)
    min_segment: int = Field(default=3, ge=2, le=100_000)


class CompareWeights(Frozen):
    """Weights of `compare`'s 0-100 overall score (normalised to sum 1)."""

    latency: float = Field(default=0.4, ge=0.0, le=1000.0, allow_inf_nan=False)
    cost: float = Field(default=0.3, ge=0.0, le=1000.0, allow_inf_nan=False)
    reliability: float = Field(default=0.3, ge=0.0, le=1000.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_weight(self) -> CompareWeights:
        if self.latency + self.cost + self.reliability <= 0:
            raise ValueError("at least one weight must be positive")
        return self


class CompareSettings(Frozen):
    """Which run stands for a target in `compare` and `recommend` (README, "Compare")."""

    min_requests: int = Field(default=20, ge=1, le=10_000_000)
    """The latest run at the target's latest settings with at least this many measured attempts
    is used: a smaller one (a smoke test) never replaces it."""


class PipelineConfig(Frozen):
    targets: list[TargetConfig] = Field(min_length=1)
    scenarios: list[BenchmarkScenario] = Field(default_factory=list)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Per-model overrides of the shipped price table."""
    default_scenarios: list[SafeName] = Field(default_factory=lambda: ["quickstart"], min_length=1)
    """What `execute` runs when no --scenario is given (an empty list would run nothing and
    report success; a repeated name would run a pair twice under one run id)."""
    lock_timeout: Duration = timedelta(seconds=30)
    trends: TrendSettings = Field(default_factory=TrendSettings)
    compare_weights: CompareWeights = Field(default_factory=CompareWeights)
    compare: CompareSettings = Field(default_factory=CompareSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: list[TargetConfig]) -> list[TargetConfig]:
        require_unique_names([t.name for t in value], "target")
        return value

    @field_validator("scenarios")
    @classmethod
    def _unique_scenarios(cls, value: list[BenchmarkScenario]) -> list[BenchmarkScenario]:
        require_unique_names([s.name for s in value], "scenario")
        return value

    @field_validator("default_scenarios")
    @classmethod
    def _unique_defaults(cls, value: list[str]) -> list[str]:
        require_unique_names(value, "default scenario")
        return value
