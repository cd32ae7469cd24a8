"""What every command shares: the global context (options + config loaded once) and small helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import LoadedConfig, load_config
from pipeline.store.lock import LockHolder, LockOptions
from schemas import INT64_MAX, INT64_MIN, TABLES

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "SEED",
    "TABLE_CHOICE",
    "Context",
    "json_option",
    "pass_ctx",
]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
F = TypeVar("F", bound=Callable[..., Any])
SEED = click.IntRange(INT64_MIN, INT64_MAX)
"""A seed is recorded in an int64 column: a larger one would fail only when its events are written."""
TABLE_CHOICE = click.Choice(sorted(TABLES))
"""An event table's name, for the housekeeping commands' `--table`."""


@dataclass
class Context:
    """Global options, and the config loaded once on first use."""

    data_dir: Path
    config_path: Path | None
    quiet: bool
    verbose: int
    _config: LoadedConfig | None = field(default=None, repr=False)

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
