"""`pipeline mock-server`: the mock behind OpenAI, Anthropic and Ollama wire protocols."""

from __future__ import annotations

import click

from pipeline.commands._base import Context, not_built, pass_ctx

__all__ = ["COMMANDS"]


@click.command("mock-server", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@pass_ctx
def mock_server(ctx: Context) -> int:
    """Serve the mock over HTTP (OpenAI, Anthropic, Ollama wire formats) on 127.0.0.1."""
    raise not_built("mock-server", "issue 3")


COMMANDS = [mock_server]
