"""Counts said the way a person writes them: "1 target", "2 targets", never "1 targets"."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """`n` and the noun agreeing with it (`plural` defaults to the singular + "s")."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
