"""The provider clients, attached to the registry's built-in kinds on import.

`schemas.registry` declares each kind and what it can do (streaming, tools, base_url needed);
this package gives each kind its client factory, a callable `(ProviderSettings) -> Provider`.
A new provider is one module plus one `register_provider` call, here or from a plugin.
Key handling is declared here too: which variable a kind reads by default and whether a key is
required, so a missing key stops `execute` before any request.
"""

from __future__ import annotations

from dataclasses import replace

from schemas import TargetConfig, get_provider, register_provider
from stages.execute.client.providers.anthropic import AnthropicProvider
from stages.execute.client.providers.base import Attempt, Provider, ProviderSettings, RequestSpec
from stages.execute.client.providers.mock import MockProvider
from stages.execute.client.providers.ollama import OllamaProvider
from stages.execute.client.providers.openai import OpenAIProvider
from stages.execute.client.providers.openai_compatible import OpenAICompatibleProvider

__all__ = [
    "DEFAULT_BASE_URLS",
    "KEY_POLICY",
    "Attempt",
    "Provider",
    "ProviderSettings",
    "RequestSpec",
    "api_key_env",
    "build_provider",
    "register_builtin_providers",
]

KEY_POLICY: dict[str, tuple[str | None, bool]] = {
    "openai": ("OPENAI_API_KEY", True),
    "anthropic": ("ANTHROPIC_API_KEY", True),
    "ollama": (None, False),
    "openai-compatible": (None, False),
    "mock": (None, False),
}
"""Per kind: the variable read when a target names none, and whether a key is required."""

_FACTORIES = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "ollama": OllamaProvider,
    "openai-compatible": OpenAICompatibleProvider,
    "mock": MockProvider,
}


DEFAULT_BASE_URLS: dict[str, str] = {
    name: url
    for name, factory in _FACTORIES.items()
    if (url := getattr(factory, "default_base_url", ""))
}
"""Per HTTP kind: the base URL used when a target names none (the in-process mock has none)."""


def register_builtin_providers() -> None:
    """Attach each built-in client to its registry kind (idempotent)."""
    for name, factory in _FACTORIES.items():
        kind = get_provider(name)
        if kind.factory is not factory:
            register_provider(replace(kind, factory=factory), replace=True)


def api_key_env(target: TargetConfig) -> tuple[str | None, bool]:
    """(variable to read, required?) for a target: its `api_key_env`, else its kind's default.

    A target that names a variable requires it: naming one says a key is needed.
    """
    default, required = KEY_POLICY.get(target.provider, (None, False))
    if target.api_key_env:
        return target.api_key_env, True
    return default, required


def build_provider(settings: ProviderSettings) -> Provider:
    """The client for a target, from the factory its kind has in the registry."""
    kind = get_provider(settings.target.provider)
    if kind.factory is None:
        raise LookupError(f"provider kind {kind.name!r} has no client registered")
    provider: Provider = kind.factory(settings)
    return provider


register_builtin_providers()
