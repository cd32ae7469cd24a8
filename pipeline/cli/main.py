"""The `pipeline` command: a thin click layer over the stages and the store.

Each command builds its inputs, calls one function, and prints what it did. Library errors become
exit codes here only: 0 ok, 1 failure, 2 bad input, 3 regression found, 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipeline.cli import (
    aggregate,
    archive,
    compact,
    compare,
    events,
    execute,
    mock_server,
    profile,
    recommend,
    report,
    run,
    scenarios,
    sweep,
    targets,
)
from pipeline.cli.context import (
    DATA_DIR,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    QUIET_HELP,
    VERBOSE_HELP,
    Context,
    accept_global_options,
)
from pipeline.cli.entry import exit_interrupted
from pipeline.errors import PipelineError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    type=DATA_DIR,
    envvar="PIPELINE_DATA_DIR",
    default="data",
    show_default=True,
    help="Data directory (events, results, profiles): a folder, or an object store's "
    "s3://bucket/prefix (also gs://, az://; credentials from AWS_* variables). "
    "Env: PIPELINE_DATA_DIR.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config. Default: ./pipeline.toml if present, else the built-in mock default.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help=QUIET_HELP,
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help=VERBOSE_HELP,
)
@click.version_option(package_name="llm-bench-pipeline", prog_name="pipeline")
@click.pass_context
def cli(
    ctx: click.Context, data_dir: str, config_path: Path | None, quiet: bool, verbose: int
) -> None:
    """Benchmark LLM providers; keep every request as an event; rebuild results, trends and advice.

    \b
    execute    run scenarios against targets, append one event per request attempt
    aggregate  replay events into results/benchmark_results.parquet and timeseries.parquet
    profile    trends across runs into profiles/performance_profiles.parquet
    recommend  rules over results and profiles into recommendations/
    run        all four in order (for cron)
    sweep      one scenario at increasing loads: the load each target takes under its SLO
    """
    ctx.obj = Context(data_dir=data_dir, config_path=config_path, quiet=quiet, verbose=verbose)


for _module in (
    execute,
    aggregate,
    report,
    profile,
    recommend,
    compare,
    run,
    sweep,
    mock_server,
    scenarios,
    targets,
    events,
    compact,
    archive,
):
    for _command in _module.COMMANDS:
        cli.add_command(accept_global_options(_command))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group and turn every known failure into an exit code and one message."""
    try:
        result: Any = cli.main(args=argv, prog_name="pipeline", standalone_mode=False)
    except click.exceptions.Abort:
        exit_interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        exit_interrupted()
    except OSError as exc:
        # The last resort: the store turns its own file errors into StoreError already; any
        # other (a full or read-only disk met elsewhere) is still one line naming the path.
        where = f"{exc.filename}: " if exc.filename is not None else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILURE)
    code = result if isinstance(result, int) else EXIT_OK
    if code == EXIT_INTERRUPTED:  # the run recorded the interruption and said so
        exit_interrupted(None)
    sys.exit(code)
