"""`pipeline scenarios list|show|validate`: what can be run, and whether a config is sound."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json, print_table
from pipeline.config import LoadedConfig, load_config
from pipeline.errors import ConfigError
from pipeline.text import counted

__all__ = ["COMMANDS"]


@click.group()
def scenarios() -> None:
    """List, show and validate scenarios (built-in and from the config)."""


@scenarios.command("list")
@json_option
@pass_ctx
def list_(ctx: Context, as_json: bool) -> int:
    """List every scenario with its load shape."""
    loaded = ctx.config
    rows = [
        {
            "name": s.name,
            "origin": loaded.scenario_origin[s.name],
            "mode": "open" if s.rate else "closed",
            "operations": s.expected_operations,
            "concurrency": s.concurrency_level,
            "rate": s.rate,
            "streaming": s.streaming_required,
            "tools": s.tools_required,
            "description": s.description,
        }
        for s in sorted(loaded.scenarios.values(), key=lambda s: s.name)
    ]
    if as_json:
        echo_json(rows)
    else:
        columns = [
            "name",
            "origin",
            "mode",
            "operations",
            "concurrency",
            "rate",
            "streaming",
            "tools",
            "description",
        ]
        print_table("scenarios", rows, columns)
    return EXIT_OK


@scenarios.command()
@click.argument("name")
@pass_ctx
def show(ctx: Context, name: str) -> int:
    """Print one scenario as JSON, with every default filled in."""
    (scenario,) = ctx.config.select_scenarios([name])
    payload = scenario.model_dump(mode="json")
    payload["origin"] = ctx.config.scenario_origin[name]
    click.echo(json.dumps(payload, indent=2))
    return EXIT_OK


@scenarios.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def validate(ctx: Context, files: tuple[Path, ...]) -> int:
    """Validate config files (default: the active config), including prompts files.

    Every file is checked, whatever the ones before it held. Exit 0 when all are valid; 2 with
    one `file: field: message` line per problem when any is not.
    """
    problems: list[str] = []
    for path in files or (None,):
        try:
            loaded: LoadedConfig = load_config(path) if path is not None else ctx.config
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        found = loaded.prompt_problems()
        problems += found
        if not found:
            ctx.info(
                f"{loaded.source}: ok "
                f"({counted(len(loaded.scenarios), 'scenario')}, "
                f"{counted(len(loaded.targets), 'target')})"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return EXIT_OK


COMMANDS = [scenarios]
