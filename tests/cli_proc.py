"""Runs several `pipeline` commands one after the other in this one process, each through the
real entry point (`pipeline.cli.main`), and prints a JSON list of {args, code, err}.

Usage: python -m tests.cli_proc JSON   (JSON: a list of argument lists; their stdout is dropped)

Why: a matrix of cases can give each case a real process of its own without paying Python's and
polars' start-up once per command. An exception that escapes `main` is printed as a traceback
into that command's `err` (code -1), so a test sees it.
"""

from __future__ import annotations

import io
import json
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from pipeline.cli.main import main


def run(args: list[str]) -> dict[str, Any]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = -1
    return {"args": args, "code": code, "err": err.getvalue()}


if __name__ == "__main__":
    sys.stdout.write(json.dumps([run(args) for args in json.loads(sys.argv[1])]) + "\n")
