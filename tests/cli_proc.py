"""Runs several `pipeline` commands one after the other in this one process, each through the
real entry point (`pipeline.cli.main`), and prints a JSON list of {args, code, out, err}.

Usage: python -m tests.cli_proc JSON   (JSON: a list of argument lists)

Why: a matrix of cases can give each case a real process of its own without paying Python's and
polars' start-up once per command. An exception that escapes `main` is printed as a traceback
into that command's `err` (code -1), so a test sees it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_batch(args: list[list[str]], cwd: Path, prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Run the commands in one fresh process (after `prefix`, e.g. `runuser -u nobody --`);
    their {args, code, out, err}."""
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.cli_proc", json.dumps(args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def run(args: list[str]) -> dict[str, Any]:
    from pipeline.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = -1
    return {"args": args, "code": code, "out": out.getvalue(), "err": err.getvalue()}


if __name__ == "__main__":
    sys.stdout.write(json.dumps([run(args) for args in json.loads(sys.argv[1])]) + "\n")
