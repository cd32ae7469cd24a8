"""What a person sees: summary tables, JSON for machines, progress bars only on a terminal.

Kept apart from the stages so they never print; the CLI decides what to show.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = [
    "ESTIMATED_NOTE",
    "ProgressReporter",
    "echo_json",
    "mark_estimated",
    "print_table",
    "progress",
]

ESTIMATED_NOTE = (
    "~ token counts (and what they cost) estimated for some requests: the server reported no "
    "usage (tokens_estimated; docs/execute.md says how)"
)


def _finite(value: Any) -> Any:
    """`value` with every NaN and infinity (nested anywhere) replaced by None.

    JSON has no NaN or Infinity: Python's `json` would print them as bare words that other
    parsers refuse, so a summary that carries one says null instead.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def echo_json(payload: Any) -> None:
    """Print `payload` as JSON that every parser reads: non-finite numbers become null."""
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    sys.stdout.write(text + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def mark_estimated(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], flag: str = "tokens_estimated"
) -> bool:
    """Prefix `~` to `columns` of each row whose token counts were (partly) estimated, so a
    table never shows an estimate as a measurement; True when any row was marked."""
    marked = False
    for row in rows:
        if row.get(flag):
            for column in columns:
                if row.get(column) is not None:
                    row[column] = "~" + _cell(row[column])
            marked = True
    return marked


def print_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A table on stdout that fits the terminal's width (off a terminal: $COLUMNS, else 80): ruled on
    a terminal, plain aligned text off one, and stacked (one block per row, `column value`
    pairs wrapped between pairs) when the columns cannot fit side by side. Never cut short."""
    console = Console(highlight=False, soft_wrap=True)
    width = console.width
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    if sum(widths) + 2 * (len(columns) - 1) > width:
        sys.stdout.write(_stacked(title, cells, columns, width))
    elif not console.is_terminal or sum(widths) + 3 * len(columns) > width:
        sys.stdout.write(f"{title}\n")
        header = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
        sys.stdout.write(header.rstrip() + "\n")
        for row in cells:
            line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
            sys.stdout.write(line.rstrip() + "\n")
    else:
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            text = column in ("run_id", "scenario", "target", "title", "description", "status")
            table.add_column(column, justify="left" if text else "right", no_wrap=True)
        for row in cells:
            table.add_row(*row)
        console.print(table)


def _stacked(title: str, cells: list[list[str]], columns: Sequence[str], width: int) -> str:
    """Each row as `column value` pairs, packed into lines of `width`, breaking only between
    pairs (a single pair longer than the line stays whole)."""
    out = [title]
    for row in cells:
        line = "-"
        for column, value in zip(columns, row, strict=True):
            pair = f"{column} {value}"
            if line != "-" and len(line) + 3 + len(pair) > width:
                out.append(line)
                line = " "
            line = f"{line} {pair}" if line in ("-", " ") else f"{line} · {pair}"
        out.append(line)
    return "\n".join(out) + "\n"


class ProgressReporter:
    """Advance a bar; a no-op when progress is off, so callers never branch."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=amount, **fields)

    def update(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)


@contextmanager
def progress(
    description: str, total: int | None, enabled: bool, status: str = ""
) -> Iterator[ProgressReporter]:
    """A progress bar on stderr when `enabled` and stderr is a terminal; silent otherwise."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield ProgressReporter(None, None)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total, status=status)
        yield ProgressReporter(bar, task)
