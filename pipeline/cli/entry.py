"""The `pipeline` command's first code: a signal is an orderly exit from the very start.

Why a module of its own: importing the CLI (click, pydantic, polars, the stages) takes a few
hundred milliseconds, and a SIGINT or SIGTERM in that time used to kill the process with a
traceback or a bare signal status (-2, -15) instead of the documented exit 130. This module
imports nothing heavy: it turns SIGTERM into the same KeyboardInterrupt that SIGINT raises,
then loads the CLI. Once `execute` runs, trio's signal receiver takes over (in-flight requests
are recorded as cancelled, the run as interrupted).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

__all__ = ["exit_interrupted", "main"]

EXIT_INTERRUPTED = 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def exit_interrupted(message: str | None = "interrupted") -> NoReturn:
    """Say it (unless `message` is None) and exit 130, deaf to any further stop signal.

    Why not `sys.exit`: trio gives back a signal its receiver had not handed out when the
    receiver closes (it re-raises it), and a KeyboardInterrupt raised from that while the
    interpreter unwinds escapes every handler, so Python kills itself with SIGINT: a bare -2
    instead of the documented 130 (seen 1-2 times in 60 runs). So: stop listening first, let a
    signal already on its way land here, flush what was printed, and leave at once (the events
    are already published, whole, by then)."""
    said = message is None
    for _ in range(3):  # a signal already on its way can interrupt this once, at most
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if message is not None and not said:
                sys.stderr.write(message + "\n")
                said = True
            sys.stdout.flush()
            sys.stderr.flush()
            break
        except KeyboardInterrupt:
            continue
    os._exit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Install the handlers, then run the CLI; an interrupt anywhere before it is exit 130."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        from pipeline.cli.main import main as cli_main

        cli_main(argv)
    except KeyboardInterrupt:
        exit_interrupted()
