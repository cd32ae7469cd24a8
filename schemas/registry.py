"""The registry of provider kinds: the "registered provider names" every config is checked against.

A kind declares its capabilities here; `stages.execute` attaches the client that speaks to it.
A new provider is added through `register_provider` alone, without touching the core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from schemas._types import shown

__all__ = [
    "ProviderKind",
    "ProviderName",
    "check_registered",
    "get_provider",
    "register_provider",
    "registered_providers",
    "unregister_provider",
]


@dataclass(frozen=True)
class ProviderKind:
    """What a provider kind can do; `factory` builds its client (set by the execute stage)."""

    name: str
    streaming: bool = True
    tools: bool = False
    needs_base_url: bool = False
    tool_choice: bool = True
    """Whether its API lets a request say if (or which) tool must be called."""
    factory: Callable[..., Any] | None = None


_REGISTRY: dict[str, ProviderKind] = {}


def register_provider(kind: ProviderKind, *, replace: bool = False) -> ProviderKind:
    """Add a provider kind; `replace=True` lets a stage attach a factory to a declared kind."""
    if not kind.name or not kind.name.replace("-", "").isalnum():
        raise ValueError(f"invalid provider kind name {kind.name!r}")
    if kind.name in _REGISTRY and not replace:
        raise ValueError(f"provider kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def unregister_provider(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_providers() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_provider(name: str) -> ProviderKind:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(registered_providers())
        raise ValueError(f"unknown provider {shown(name)}; registered providers: {known}") from None


def check_registered(name: str) -> str:
    """A field validator: the name must be a registered provider kind."""
    get_provider(name)
    return name


ProviderName = Annotated[str, AfterValidator(check_registered)]
"""A provider kind's name, checked against the registry when a model is validated."""


for _builtin in (
    ProviderKind("openai", streaming=True, tools=True),
    ProviderKind("anthropic", streaming=True, tools=True),
    ProviderKind("ollama", streaming=True, tools=True, tool_choice=False),
    ProviderKind("openai-compatible", streaming=True, tools=True, needs_base_url=True),
    ProviderKind("mock", streaming=True, tools=True),
):
    register_provider(_builtin)
