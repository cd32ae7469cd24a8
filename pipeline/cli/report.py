"""`pipeline report`: one self-contained HTML page of what has been built."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.context import EXIT_OK, Context, json_option, pass_ctx
from pipeline.cli.ui import echo_json

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write (replaced atomically).",
)
@click.option(
    "--scenario", "scenarios", multiple=True, help="Only this scenario (repeatable; default: all)."
)
@json_option
@pass_ctx
def report(ctx: Context, out: Path, scenarios: tuple[str, ...], as_json: bool) -> int:
    """A self-contained HTML report with charts (opens offline: inline SVG, no script, no CDN).

    Shows what has been built; a section whose input is missing names the command that builds it.
    """
    from stages.report.run import write_report  # matplotlib loads only for this command

    ctx.store.require()  # a mistyped --data-dir is not an empty report

    written = write_report(ctx.store, out, scenarios or None, ctx.config.config.trends)
    for missing in written.missing:
        ctx.info(f"note: {missing.message}")
    if as_json:
        echo_json({"path": str(written.path), "sections": list(written.sections)})
    elif not ctx.quiet:
        click.echo(str(written.path))
    return EXIT_OK


COMMANDS = [report]
