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
from typing import Any

import pytest
from hypothesis import settings

from pipeline.cli.main import main
from tests import s3_server

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


# -- the store's two backends -----------------------------------------------------------------

S3_BUCKET = "pipeline-tests"
S3_SECRET = "test-secret-key-never-printed"
"""The moto server accepts any key; this one is checked for in messages and on disk."""


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3 (moto, `tests/s3_server.py`) on 127.0.0.1 for this test process, with the
    standard AWS variables pointing at it (set for the session: child processes inherit them)."""
    proc, endpoint = s3_server.spawn(str(ROOT))
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="test-access-key",
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        import httpx

        httpx.put(f"{endpoint}/{S3_BUCKET}").raise_for_status()  # moto takes it unsigned
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.communicate(timeout=10)


_S3_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
)


@dataclass
class StoreDir:
    """One data directory of either backend, and raw access to its files (to plant, damage
    or look at them the way an outsider would, bypassing the store)."""

    location: Path | str
    """A local folder, or `s3://pipeline-tests/<unique prefix>`."""

    @property
    def is_local(self) -> bool:
        return isinstance(self.location, Path)

    def _client(self) -> Any:
        from pipeline.store.objstore import ObjectStore

        return ObjectStore.from_url(str(self.location)).client

    def read(self, key: str) -> bytes:
        if isinstance(self.location, Path):
            return (self.location / key).read_bytes()
        import obstore

        return bytes(obstore.get(self._client(), key).bytes())

    def write(self, key: str, data: bytes) -> None:
        if isinstance(self.location, Path):
            (self.location / key).parent.mkdir(parents=True, exist_ok=True)
            (self.location / key).write_bytes(data)
            return
        import obstore

        obstore.put(self._client(), key, data)

    def delete(self, key: str) -> None:
        if isinstance(self.location, Path):
            (self.location / key).unlink()
            return
        import obstore

        obstore.delete(self._client(), key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every file below `prefix`, as keys, sorted."""
        if isinstance(self.location, Path):
            root = self.location / prefix if prefix else self.location
            if not root.exists():
                return []
            return sorted(
                p.relative_to(self.location).as_posix() for p in root.rglob("*") if p.is_file()
            )
        import obstore

        found = obstore.list(self._client(), prefix or None)
        return sorted(meta["path"] for chunk in found for meta in chunk)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StoreDir]:
    """A maker of fresh, empty data directories of one backend: a tmp folder, or a new prefix
    in the local S3's bucket. Tests of the store's promises take this (or `store_dir`) and run
    once per backend."""
    import uuid

    if request.param == "local":
        counter = iter(range(1_000_000))
        return lambda: StoreDir(tmp_path / f"data{next(counter)}")
    request.getfixturevalue("s3_endpoint")
    return lambda: StoreDir(f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store_dir(backend: Callable[[], StoreDir]) -> StoreDir:
    return backend()
