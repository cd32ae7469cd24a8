"""The CLI's commands, one module per area, registered on the group by `register_all`."""

from __future__ import annotations

import click

__all__ = ["register_all"]


def register_all(group: click.Group) -> None:
    from pipeline.commands import analysis, data, execute, insight, mock_server, run, scenarios

    for module in (execute, analysis, insight, run, mock_server, scenarios, data):
        for command in module.COMMANDS:
            group.add_command(command)
