"""The error taxonomy of a request attempt, and keeping secrets out of what is recorded.

A provider failure is data, not an exception: every failed attempt becomes one `requests` event
whose `error_type` is one of `schemas.ERROR_TYPES`. The classification lives here, once, so that
the HTTP providers and the in-process mock agree on what a 429 or a cut stream is called.
Messages are short (a person reads them in a table) and scrubbed: an API key that a server echoes
back in an error body must never reach the event log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_MESSAGE",
    "ProtocolViolation",
    "RETRYABLE",
    "error_type_for_status",
    "parse_retry_after",
    "scrub",
    "status_for_error",
]

MAX_MESSAGE = 200
RETRYABLE = frozenset({"rate_limited", "server_error", "timeout", "connection"})
"""Error types worth another attempt when a target has `max_retries`; the rest would fail again."""

_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)bearer\s+[^\s\"',]+"),
    re.compile(r"(?i)((?:x-)?api[-_]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"),
)


class ProtocolViolation(ValueError):
    """A reply that breaks its wire format in a way a parser noticed (a usage count that is not
    a count, a list where an object belongs, a line over the limit): the attempt becomes a
    `protocol` error with this message (`HttpProvider`)."""


def error_type_for_status(status: int) -> str:
    """429 → rate_limited, 5xx → server_error, any other 4xx → client_error."""
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "client_error"


def status_for_error(error_type: str) -> str:
    """The event's `status` for an error type: timeout and cancelled have their own."""
    if error_type in ("timeout", "cancelled"):
        return error_type
    return "error"


def _forms(secret: str) -> list[str]:
    """The ways a secret can show up in a message: as is, with its whitespace collapsed (as the
    message is), and JSON-escaped (a server echoing a header inside a JSON body)."""
    forms = {secret, " ".join(secret.split()), json.dumps(secret)[1:-1]}
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub(message: str, secrets: Iterable[str] = ()) -> str:
    """One short line, with the given secrets and anything shaped like a key replaced by ***.

    Scrubbed before it is cut: a secret cut in half would no longer match. Only a window of the
    message is looked at (a reply can be megabytes), wide enough that every secret that starts
    within the part that is kept lies wholly inside it."""
    known = [s for s in secrets if s]
    window = 4 * MAX_MESSAGE + max((len(s) for s in known), default=0)
    text = message[:window]
    for secret in known:
        for form in _forms(secret):
            text = text.replace(form, "***")
    text = " ".join(text.split())
    for secret in known:
        for form in _forms(secret):
            text = text.replace(form, "***")
    text = _PATTERNS[0].sub("***", text)
    text = _PATTERNS[1].sub("Bearer ***", text)
    text = _PATTERNS[2].sub(r"\1***", text)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    # A lone surrogate (JSON's "\ud800") cannot be stored as UTF-8: it would fail the batch.
    return text.encode("utf-8", "replace").decode("utf-8")


def parse_retry_after(value: str | None, value_ms: str | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or an HTTP date), else None."""
    if value_ms:
        try:
            return max(0.0, float(value_ms) / 1000.0)
        except ValueError:
            pass
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
