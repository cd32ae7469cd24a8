"""`pipeline execute`: run scenarios against targets and append events."""

from __future__ import annotations

import click

from pipeline.commands._base import Context, not_built, pass_ctx

__all__ = ["COMMANDS"]


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@pass_ctx
def execute(ctx: Context) -> int:
    """Run scenarios against targets; append one event per request attempt."""
    raise not_built("execute", "issue 4")


COMMANDS = [execute]
