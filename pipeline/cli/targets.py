"""`pipeline targets list|show`: what can be benchmarked, and whether its key is there.

Why: the likeliest first mistakes are a base URL without (or with one too many) `/v1` and a key
variable that is not set in the shell that runs the job. Both show here before any request is
sent. Nothing secret is printed: a key is shown only as its variable's name and whether it is
set; a password in a base URL is left out, like every recorded target.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json, print_table
from schemas import TargetConfig
from schemas.config import strip_userinfo
from stages.execute.client.providers import DEFAULT_BASE_URLS, api_key_env

__all__ = ["COMMANDS"]


def _key(target: TargetConfig) -> tuple[str | None, str]:
    """(the key's variable, "set" / "not set" / "not needed")."""
    variable, required = api_key_env(target)
    if variable is None:
        return None, "not needed"
    if os.environ.get(variable):
        return variable, "set"
    return variable, "not set" if required else "not set (optional)"


def _row(target: TargetConfig) -> dict[str, Any]:
    variable, state = _key(target)
    base = target.base_url or DEFAULT_BASE_URLS.get(target.provider)
    secrets = {
        header: ("set" if os.environ.get(name) else "not set")
        for header, name in target.secret_headers.items()
    }
    return {
        "name": target.name,
        "provider": target.provider,
        "model": target.model,
        "base_url": strip_userinfo(base) if base else "(in-process)",
        "key_variable": variable,
        "key": state,
        "secret_headers": secrets,
        "mock": target.mock.model_dump(mode="json", exclude_defaults=True) if target.mock else None,
    }


@click.group()
def targets() -> None:
    """List and show the targets of the config (with no config: the built-in mock targets)."""


@targets.command("list")
@json_option
@pass_ctx
def list_(ctx: Context, as_json: bool) -> int:
    """One line per target: provider, model, base URL, the key's variable and whether it is set."""
    rows = [_row(t) for t in ctx.config.config.targets]
    if as_json:
        echo_json(rows)
    else:
        columns = ["name", "provider", "model", "base_url", "key_variable", "key"]
        print_table(f"targets ({ctx.config.source})", rows, columns)
    return EXIT_OK


@targets.command()
@click.argument("name")
@pass_ctx
def show(ctx: Context, name: str) -> int:
    """One target as JSON, every default filled in (the mock's knobs, limits, headers masked)."""
    (target,) = ctx.config.select_targets([name])
    payload = target.public_dict()
    payload.update({k: v for k, v in _row(target).items() if k in ("key_variable", "key")})
    payload["base_url"] = _row(target)["base_url"]
    payload["secret_headers"] = _row(target)["secret_headers"]
    click.echo(json.dumps(payload, indent=2, sort_keys=True))
    return EXIT_OK


COMMANDS = [targets]
