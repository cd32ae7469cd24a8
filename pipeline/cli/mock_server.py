"""`pipeline mock-server`: the mock behind OpenAI, Anthropic and Ollama wire protocols.

The knobs are `MockConfiguration`'s: a mock target's `mock` table from the config (with
`--config FILE` or `--target NAME`), overridden by any flag given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from pipeline.cli.context import EXIT_OK, Context, pass_ctx
from pipeline.config import load_config
from pipeline.errors import ConfigError
from schemas import ERROR_KINDS, MockConfiguration

__all__ = ["COMMANDS"]

# flag (click parameter name) -> MockConfiguration field
_KNOBS = {
    "latency": "simulated_latency",
    "token_rate": "token_generation_rate",
    "error_rate": "error_injection_rate",
    "variability": "response_variability",
    "concurrency_limit": "concurrency_limit",
    "output_tokens": "output_tokens",
    "seed": "seed",
    "error_kinds": "error_kinds",
    "overload": "overload",
    "retry_after": "retry_after",
    "hang": "hang",
    "memory": "memory_usage_simulation",
    "mimic": "mimic",
    "batch_capacity": "batch_capacity",
}


def _flag_errors(error: ValidationError) -> str:
    """Name the flag a person typed (`--latency`), not the field behind it."""
    flags = {field: "--" + flag.replace("_", "-") for flag, field in _KNOBS.items()}
    lines = []
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else ""
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"mock-server: {flags.get(field, field)}: {message}")
    return "\n".join(lines)


def _mock_table(ctx: Context, config_file: Path | None, target: str | None) -> dict[str, Any]:
    """The `mock` table of the chosen mock target (by name, else the first mock target)."""
    loaded = load_config(config_file) if config_file is not None else ctx.config
    mocks = [t for t in loaded.config.targets if t.provider == "mock"]
    if target is not None:
        chosen = loaded.targets.get(target)
        if chosen is None or chosen.provider != "mock":
            known = ", ".join(t.name for t in mocks) or "none"
            raise ConfigError(f"{loaded.source}: no mock target {target!r}; mock targets: {known}")
    elif mocks:
        chosen = mocks[0]
    else:
        raise ConfigError(f"{loaded.source}: has no target with provider = 'mock'")
    return chosen.mock.model_dump() if chosen.mock is not None else {}


@click.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to bind (0: any free port; the address is printed).",
)
@click.option("--latency", help="Delay before the first token, e.g. 50ms. [default: 50ms]")
@click.option("--token-rate", type=float, help="Tokens per second after the first. [default: 100]")
@click.option("--error-rate", type=float, help="Share of requests that fail, 0..1. [default: 0]")
@click.option("--variability", type=float, help="Relative spread of timings, 0..1. [default: 0]")
@click.option("--concurrency-limit", type=int, help="Requests served at once. [default: 100]")
@click.option(
    "--batch-capacity",
    type=int,
    help="Saturate like a batching server: with k requests in flight each token gap is "
    "stretched by max(1, k / N) (docs/mock.md). [default: off]",
)
@click.option("--output-tokens", type=int, help="Tokens per response. [default: max_tokens]")
@click.option("--seed", type=int, help="Seed of timings and errors. [default: 0]")
@click.option(
    "--error-kinds",
    help=f"Comma-separated kinds drawn by --error-rate: {', '.join(ERROR_KINDS)}. "
    "[default: rate_limit,server_error,unavailable]",
)
@click.option(
    "--overload",
    type=click.Choice(["queue", "reject"]),
    help="Past the concurrency limit: queue (latency grows) or reject with 429. [default: queue]",
)
@click.option("--retry-after", help="retry-after of an injected 429, e.g. 1s. [default: 1s]")
@click.option("--hang", help="How long an injected hang lasts, e.g. 600s. [default: 600s]")
@click.option("--memory", type=int, help="Bytes held per request in flight. [default: 0]")
@click.option(
    "--mimic",
    type=click.Choice(["openai", "llama.cpp", "llama-cpp-python"]),
    help="Reproduce another server's wire quirks on the OpenAI endpoint (docs/mock.md). "
    "[default: openai]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the knobs from a mock target of this config (flags still win).",
)
@click.option("--target", help="Which mock target's knobs to use (default: the first mock target).")
@click.option("-v", "--verbose", is_flag=True, help="One log line per request (on stderr).")
@pass_ctx
def mock_server(
    ctx: Context,
    /,
    host: str,
    port: int,
    config_file: Path | None,
    target: str | None,
    verbose: bool,
    **knobs: Any,
) -> int:
    """Serve the mock over HTTP (OpenAI, Anthropic, Ollama wire formats) on 127.0.0.1.

    \b
    POST /v1/chat/completions   OpenAI (SSE when stream=true, usage chunk on request)
    POST /v1/messages           Anthropic (its SSE event sequence)
    POST /api/chat              Ollama (NDJSON)
    GET  /v1/models, /api/tags, /health
    Stops cleanly on SIGINT or SIGTERM (exit 0).
    """
    from stages.mock.http.server import run_server

    settings: dict[str, Any] = {}
    if config_file is not None or target is not None or ctx.config_path is not None:
        settings = _mock_table(ctx, config_file, target)
    for flag, value in knobs.items():
        if value is None:
            continue
        if flag == "error_kinds":
            value = tuple(k.strip() for k in value.split(",") if k.strip())
        settings[_KNOBS[flag]] = value
    try:
        config = MockConfiguration.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(_flag_errors(exc)) from None
    code = run_server(config, host, port, verbose=verbose or ctx.verbose > 0)
    return code if code else EXIT_OK


COMMANDS = [mock_server]
