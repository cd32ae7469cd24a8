"""A full or read-only disk gives one line naming the path and the cause, exit 1 (issue item 5).

Real file systems: a small tmpfs filled to the last block and inode (and one with a few pages
left, so that the lock is taken and the outputs' own writes fail), and a tmpfs remounted
read-only. Mounting needs root (or CAP_SYS_ADMIN); where it is not permitted the tests skip
saying so. And a data directory without write permission. Every command runs in a real process;
nothing may be half-written or left in staging.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.store.eventlog import EventLog
from schemas import CompareSettings, RecommendSettings, TrendSettings
from stages.aggregate.run import run_aggregate
from stages.profile.run import run_profile
from stages.recommend.run import run_recommend
from tests.cli_proc import run_batch
from tests.conftest import CliResult
from tests.eventgen import many, write_runs

PRICES = load_config(cwd=Path("/nonexistent")).price
OUTPUTS = [
    "results/benchmark_results.parquet",
    "results/timeseries.parquet",
    "profiles/performance_profiles.parquet",
    "recommendations/recommendations.parquet",
    "recommendations/recommendations.md",
]


def commands(data: Path, report: Path) -> list[list[str]]:
    return [
        ["--data-dir", str(data), *command]
        for command in (
            ["aggregate"],
            ["profile"],
            ["recommend"],
            ["compact", "--before", "2999-01-01"],
            ["archive", "--older-than", "30"],
            ["report", "--out", str(report)],
            ["execute", "--requests", "3"],
        )
    ]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs with 400 inodes, mounted for the test."""
    mount = tmp_path / "fs"
    mount.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=400", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no `mount` command here to make a small file system")
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def build(data: Path) -> dict[str, bytes]:
    """Events (one closed partition of four runs, so compact and archive have work) and every
    output; returns the outputs' bytes."""
    write_runs(EventLog(data), many("r", 4, requests=30))
    run_aggregate(data, PRICES)
    run_profile(data, TrendSettings())
    run_recommend(data, RecommendSettings(), CompareSettings())
    return {name: (data / name).read_bytes() for name in OUTPUTS}


def fill(mount: Path, leave_bytes: int = 0, leave_inodes: int = 0) -> None:
    """Use up every block and inode of the file system, then give back a few."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 1 << 12):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    inodes: list[Path] = []
    while True:
        try:
            path = mount / f"inode-{len(inodes)}"
            path.touch()
            inodes.append(path)
        except OSError:
            break
    for path in inodes[:leave_inodes]:
        path.unlink()
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))


def check_one_line_errors(
    results: list[dict[str, object]], cause: str, must_fail: set[str]
) -> set[str]:
    """Every command worked or failed with one line (exit 1) naming a path and `cause`; return
    the commands that failed."""
    failed = set()
    for result in results:
        args, code, err = result["args"], result["code"], result["err"]
        assert isinstance(args, list) and isinstance(err, str)
        command = args[2]
        assert "Traceback" not in err, f"{command}: {err}"
        if code == 0:
            assert command not in must_fail, f"{command} should have failed"
            continue
        failed.add(command)
        assert code == 1, f"{command}: {err}"
        (line,) = err.splitlines()
        assert line.startswith("error: /") and line.endswith(f": {cause}"), f"{command}: {line}"
    return failed


def check_nothing_half_written(data: Path, outputs: dict[str, bytes]) -> None:
    assert not list((data / ".staging").glob("*")), "a temp file was left in staging"
    for name, content in outputs.items():  # a failed stage replaced none of its files
        assert (data / name).read_bytes() == content, name


ALL = {"aggregate", "profile", "recommend", "compact", "archive", "report", "execute"}


@pytest.mark.slow
def test_a_full_disk_fails_each_command_with_one_line(tmpfs: Path) -> None:
    data = tmpfs / "data"
    outputs = build(data)
    fill(tmpfs)
    results = run_batch(commands(data, tmpfs / "report.html"), tmpfs.parent)
    check_one_line_errors(results, "No space left on device", must_fail=ALL)
    check_nothing_half_written(data, outputs)
    assert (data / ".lock").read_bytes() == b""  # not even the pid could be written


@pytest.mark.slow
def test_a_nearly_full_disk_fails_the_writes_and_keeps_the_old_outputs(tmpfs: Path) -> None:
    """Room for the lock's pid and a temp file's first pages, not for the outputs."""
    data = tmpfs / "data"
    outputs = build(data)
    fill(tmpfs, leave_bytes=3 * 4096, leave_inodes=3)
    results = run_batch(commands(data, tmpfs / "report.html"), tmpfs.parent)
    failed = check_one_line_errors(
        results, "No space left on device", must_fail={"aggregate", "profile", "report"}
    )
    assert {"aggregate", "profile", "report"} <= failed
    check_nothing_half_written(data, {k: v for k, v in outputs.items() if "recommend" not in k})
    assert not list(tmpfs.glob("*.tmp")), "report left its temp file"


@pytest.mark.slow
def test_a_read_only_data_dir_fails_each_command_with_one_line(tmpfs: Path) -> None:
    data = tmpfs / "data"
    outputs = build(data)
    remount = subprocess.run(
        ["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True, check=False
    )
    assert remount.returncode == 0, remount.stderr
    results = run_batch(commands(data, tmpfs / "report.html"), tmpfs.parent)
    check_one_line_errors(results, "Read-only file system", must_fail=ALL)
    check_nothing_half_written(data, outputs)


@pytest.fixture
def unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """A built data directory the commands may not write to (EACCES), and the command prefix to
    run them with: as root, as user `nobody` (root writes through permission bits); otherwise as
    ourselves, with the folders made read-only."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without `setpriv` to drop to another user")
        base = Path(tempfile.mkdtemp(prefix="unwritable-"))  # tmp_path is root's only
        base.chmod(0o755)
        home = base / "home"  # somewhere `nobody` may write its matplotlib config
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        monkeypatch.setenv("MPLCONFIGDIR", str(home))
    else:
        base, prefix = tmp_path, []
    data = base / "data"
    try:
        yield data, prefix
    finally:
        for path in [data, *data.rglob("*")] if data.exists() else []:
            if path.is_dir():
                path.chmod(0o755)
        if base != tmp_path:
            shutil.rmtree(base)


def test_a_data_dir_without_write_permission_fails_with_one_line(
    unwritable: tuple[Path, list[str]],
) -> None:
    data, prefix = unwritable
    outputs = build(data)
    if not prefix:
        for path in [data.parent, data, *data.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
    results = run_batch(commands(data, data.parent / "report.html"), data.parent, prefix)
    check_one_line_errors(results, "Permission denied", must_fail=ALL)
    check_nothing_half_written(data, outputs)


def test_any_other_file_error_is_still_one_line(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI's last resort: an OSError the store did not turn into a StoreError itself."""

    def unreadable(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "somewhere"))

    monkeypatch.setattr("stages.aggregate.run_aggregate", unreadable)
    result = cli("--data-dir", str(tmp_path / "data"), "aggregate")
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'somewhere'}: Permission denied\n")
