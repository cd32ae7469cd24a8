"""What every command shares: the global context (options + config loaded once) and small helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import LoadedConfig, load_config
from pipeline.errors import InputError
from pipeline.store.backend import Store
from pipeline.store.location import is_url, open_store
from pipeline.store.lock import LockHolder, LockOptions
from schemas import INT64_MAX, INT64_MIN, TABLES, parse_duration

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "EXIT_TARGET_FAILED",
    "QUIET_HELP",
    "VERBOSE_HELP",
    "DURATION",
    "SEED",
    "TABLE_CHOICE",
    "DATA_DIR",
    "Context",
    "accept_global_options",
    "json_option",
    "pass_ctx",
]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TARGET_FAILED = 4
"""execute (and run) when every measured attempt of some target failed: a cron job's alarm."""
F = TypeVar("F", bound=Callable[..., Any])
SEED = click.IntRange(INT64_MIN, INT64_MAX)


class _DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail("must be a positive duration", param, ctx)
        return seconds


DURATION = _DurationType()
"""A positive duration option: seconds or a string with a unit (`30s`, `5m`)."""
"""A seed is recorded in an int64 column: a larger one would fail only when its events are written."""
TABLE_CHOICE = click.Choice(sorted(TABLES))
"""An event table's name, for the housekeeping commands' `--table`."""


@dataclass
class Context:
    """Global options, and the config loaded once on first use."""

    data_dir: str
    """The data directory as given: a folder, or an object-store URL (`s3://bucket/prefix`)."""
    config_path: Path | None
    quiet: bool
    verbose: int
    _config: LoadedConfig | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.data_dir)
        return self._store

    @property
    def config(self) -> LoadedConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def show_progress(self) -> bool:
        return not self.quiet

    def lock(self, command: str) -> LockOptions:
        """How `command` takes the data directory's lock: the config's timeout, its name in the
        lock file, and a line on stderr if it has to wait (the store never prints)."""

        def waiting(holder: LockHolder) -> None:
            self.info(f"waiting for the data directory lock held by {holder} ...")

        timeout_s = self.config.config.lock_timeout.total_seconds()
        return LockOptions(timeout_s=timeout_s, command=command, on_wait=waiting)

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


pass_ctx = click.make_pass_decorator(Context)


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable summary."
    )(func)


class _DataDir(click.ParamType):  # type: ignore[type-arg]
    """A folder (not a file), or an object-store URL that `open_store` accepts; any other URL
    is refused here (exit 2), never made into a folder named after it."""

    name = "DIR|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if is_url(text):
            try:
                open_store(text)
            except InputError as exc:
                self.fail(str(exc), param, ctx)
        elif Path(text).is_file():
            self.fail(f"{text!r} is a file, not a folder", param, ctx)
        return text


DATA_DIR = _DataDir()


def _set_data_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        found = ctx.ensure_object(Context)
        found.data_dir, found._store = value, None


def _set_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        found = ctx.ensure_object(Context)
        found.config_path, found._config = value, None


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).quiet = True


def _set_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        ctx.ensure_object(Context).verbose += value


QUIET_HELP = (
    "No progress bars, summary tables or notes: a command that changes data prints only "
    "warnings and errors (and --json). A question (compare, events, targets, scenarios) still "
    "prints its answer."
)
VERBOSE_HELP = (
    "More detail: execute lists every distinct error message; mock-server logs each request."
)

_GLOBALS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--data-dir",),
        {
            "type": DATA_DIR,
            "callback": _set_data_dir,
            "help": "Data directory, a folder or s3://bucket/prefix (a global option, also "
            "accepted after the command).",
        },
    ),
    (
        ("--config",),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "callback": _set_config,
            "help": "TOML config (a global option, also accepted after the command).",
        },
    ),
    (
        ("-q", "--quiet"),
        {"is_flag": True, "callback": _set_quiet, "help": QUIET_HELP},
    ),
    (
        ("-v", "--verbose"),
        {"count": True, "callback": _set_verbose, "help": VERBOSE_HELP},
    ),
)


def accept_global_options(command: click.Command) -> click.Command:
    """Let `pipeline COMMAND --data-dir X` mean `pipeline --data-dir X COMMAND`: the global
    options a command does not define itself (mock-server has its own `--config`, `-v`) are
    added to it (and to a group's subcommands), each setting the shared `Context`. Parsed after
    the group's, so a value given after the command wins."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_global_options(sub)
        return command
    taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
    taken |= {opt for param in command.params for opt in getattr(param, "secondary_opts", [])}
    for flags, settings in _GLOBALS:
        if not taken.intersection(flags):
            name = "_global_" + flags[-1].lstrip("-").replace("-", "_")
            option = click.Option([*flags, name], expose_value=False, **settings)
            command.params.append(option)
    return command
