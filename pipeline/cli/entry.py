"""The `pipeline` command's first code: a signal is an orderly exit from the very start.

Why a module of its own: importing the CLI (click, pydantic, polars, the stages) takes a few
hundred milliseconds, and a SIGINT or SIGTERM in that time used to kill the process with a
traceback or a bare signal status (-2, -15) instead of the documented exit 130. This module
imports nothing heavy: it turns SIGTERM into the same KeyboardInterrupt that SIGINT raises,
then loads the CLI. Once `execute` runs, trio's signal receiver takes over (in-flight requests
are recorded as cancelled, the run as interrupted).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Install the handlers, then run the CLI; an interrupt anywhere before it is exit 130."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        from pipeline.cli.main import main as cli_main

        cli_main(argv)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
