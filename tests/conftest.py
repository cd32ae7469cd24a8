"""Shared fixtures: a temporary data directory, the CLI run in-process, event strategies."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import settings

from pipeline.cli.main import main

# CI runs the same examples every time (a property that fails there fails here too).
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., CliResult]:
    """Run `pipeline ARGS` in-process, in an empty working directory; return code and output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_DATA_DIR", raising=False)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        captured = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)

    return run


def run_pipeline(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `pipeline` entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def mock_server_processes(*commands: Sequence[str]) -> Iterator[list[str]]:
    """`pipeline mock-server --port 0 ARGS` for each ARGS, each in its own process, all started
    before any is waited for (their start-ups overlap); yields their root URLs in order."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "mock-server", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in commands
    ]
    try:
        roots = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "listening on" in line, line
            roots.append(line.strip().rsplit(" ", 1)[-1])
        yield roots
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=10)


@contextmanager
def mock_server_process(*knobs: str) -> Iterator[str]:
    """`pipeline mock-server` in its own process on a free port; yields its root URL."""
    with mock_server_processes(knobs) as (root,):
        yield root


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)
