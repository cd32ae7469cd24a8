"""`pipeline compact` and `pipeline archive`: housekeeping of the event log."""

from __future__ import annotations

import click

from pipeline.commands._base import Context, not_built, pass_ctx

__all__ = ["COMMANDS"]


@click.command()
@pass_ctx
def compact(ctx: Context) -> int:
    """Merge the small files of closed date partitions into one each."""
    raise not_built("compact", "issue 2")


COMMANDS = [compact]
