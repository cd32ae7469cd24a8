"""Why a pair's requests failed, said the way a person fixes it: counts, a sample, a hint.

A wrong base URL is the likeliest first mistake (`/v1` for an OpenAI-style server, none for
Anthropic), then a key variable not set where the job runs, then a server that is not up. The
events say all of it (`error_type`, `http_status`, `error_message`), but a run that ends with
`ok 0 errors 3` and exit 0 hides it; this turns a pair's error counts into lines for the end of
the run. Pure: the messages are already scrubbed when they are recorded.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas import TargetConfig
from stages.execute.client.providers import DEFAULT_BASE_URLS, api_key_env

__all__ = ["describe_errors", "hint"]


def hint(error_type: str, message: str, target: TargetConfig) -> str | None:
    """The likely cause of one kind of failure, if there is a common one."""
    if target.provider == "mock":
        return None  # its faults are injected on purpose: there is nothing to fix
    base = target.base_url or DEFAULT_BASE_URLS.get(target.provider, "")
    if error_type == "client_error" and "404" in message:
        if target.provider == "anthropic":
            want = "without /v1 (e.g. https://api.anthropic.com): the client adds /v1/messages"
        elif target.provider == "ollama":
            want = "its root (e.g. http://localhost:11434): the client adds /api/chat"
        else:
            want = "with /v1 (e.g. http://localhost:8000/v1): the client adds /chat/completions"
        return f"the path was not found: check base_url ({base}); it wants it {want}"
    if error_type == "client_error" and ("401" in message or "403" in message):
        variable, _ = api_key_env(target)
        return f"the key was refused: is {variable or 'api_key_env'} set to a valid key here?"
    if error_type == "connection":
        return f"nothing answered at {base or 'the target'}: is the server up, and the port right?"
    if error_type == "timeout":
        return "no complete answer in time: a slow or overloaded server, or raise request_timeout"
    if error_type == "rate_limited":
        return "the target limited the rate: lower --concurrency, or set max_retries"
    return None


def describe_errors(
    errors_by_type: Mapping[str, Mapping[str, int]], target: TargetConfig, *, every: bool = False
) -> list[str]:
    """One line per error type (most frequent first): count, a sample message (every distinct
    message with `every`), and the hint; empty when nothing failed."""
    lines = []
    for kind, messages in errors_by_type.items():
        total = sum(messages.values())
        named = [(m, n) for m, n in messages.items() if m]
        rest = messages.get("", 0)  # messages past the bound, or none at all
        if rest:
            named.append(("(other messages)" if named else "(no message)", rest))
        samples = named if every else named[:1]
        text = "; ".join(m + (f" ×{n}" if every else "") for m, n in samples)
        line = f"{kind} ×{total}: {text}"
        advice = hint(kind, named[0][0], target)
        lines.append(line + (f" → {advice}" if advice else ""))
    return lines
