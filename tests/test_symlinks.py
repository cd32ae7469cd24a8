"""A symbolic link planted anywhere in the data directory is never followed (issue item 8).

Each case plants one link in a copy of a fully built data directory, pointing at an "outside"
directory (or file) that holds canaries: copies of what the pipeline would find there, so that
following the link would visibly write, truncate, move or delete them. Then every command runs
in a real process of its own; the outside files must be byte-identical with the same mtime, and
each command either works or exits 1 with one line naming the link.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.store.eventlog import EventLog
from pipeline.store.layout import LOCK_NAME
from schemas import CompareSettings, RecommendSettings, TrendSettings
from stages.aggregate.run import run_aggregate
from stages.profile.run import run_profile
from stages.recommend.run import run_recommend
from tests.cli_proc import run_batch
from tests.conftest import run_pipeline
from tests.eventgen import many, write_runs

PRICES = load_config(cwd=Path("/nonexistent")).price

DAY = "date=2026-03-02"
PARTITION = f"events/requests/{DAY}"
COMMANDS = [
    ["execute", "--requests", "3"],
    ["aggregate", "--skip-corrupt"],
    ["profile"],
    ["recommend"],
    ["compact", "--skip-corrupt", "--before", "2999-01-01"],
    ["archive", "--older-than", "30"],
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Events of four runs in one closed, archivable partition, and every output built."""
    data = tmp_path_factory.mktemp("built") / "data"
    write_runs(EventLog(data), many("r", 4, requests=30))
    run_aggregate(data, PRICES)
    run_profile(data, TrendSettings())
    run_recommend(data, RecommendSettings(), CompareSettings())
    return data


def _move_out(data: Path, relative: str, outside: Path) -> Path:
    """Move `relative` out of the data dir (it becomes the canary) and link to it instead."""
    target = outside / relative.replace("/", "_")
    shutil.move(data / relative, target)
    (data / relative).symlink_to(target, target_is_directory=target.is_dir())
    return data / relative


def _linked_dir(relative: str) -> Callable[[Path, Path], Path]:
    """The folder `relative` (made if missing) becomes a link to an outside copy of it."""

    def plant(data: Path, outside: Path) -> Path:
        (data / relative).mkdir(parents=True, exist_ok=True)
        # A .tmp canary: a sweep of `.staging` that followed the link would delete it.
        (data / relative / "canary.tmp").write_text("outside")
        return _move_out(data, relative, outside)

    return plant


def _linked_file(relative: str | Callable[[Path], str]) -> Callable[[Path, Path], Path]:
    """The file `relative` becomes a link to an outside file (made if missing)."""

    def plant(data: Path, outside: Path) -> Path:
        name = relative(data) if callable(relative) else relative
        if not (data / name).exists():
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            (data / name).write_text("canary: someone else's file\n")
        return _move_out(data, name, outside)

    return plant


def _an_event_file(data: Path) -> str:
    return f"{PARTITION}/{sorted(p.name for p in (data / PARTITION).glob('r-*.arrow'))[0]}"


def _corrupt_then(plant: Callable[[Path, Path], Path]) -> Callable[[Path, Path], Path]:
    """Also a corrupt event file, so that --skip-corrupt moves something into quarantine/."""

    def both(data: Path, outside: Path) -> Path:
        (data / PARTITION / "r-999-w0.deadbeef-000000.arrow").write_bytes(b"not arrow")
        return plant(data, outside)

    return both


CASES: dict[str, Callable[[Path, Path], Path]] = {
    ".lock": _linked_file(LOCK_NAME),
    ".staging": _linked_dir(".staging"),
    ".staging/x.tmp": _linked_file(".staging/abandoned.tmp"),
    "events": _linked_dir("events"),
    "events/requests": _linked_dir("events/requests"),
    "events/requests/date=D": _linked_dir(PARTITION),
    "events/requests/date=D/x.arrow": _linked_file(_an_event_file),
    "events/runs": _linked_dir("events/runs"),
    "results": _linked_dir("results"),
    "results/x.parquet": _linked_file("results/benchmark_results.parquet"),
    "profiles": _linked_dir("profiles"),
    "recommendations": _linked_dir("recommendations"),
    "recommendations/x.md": _linked_file("recommendations/recommendations.md"),
    "quarantine": _corrupt_then(_linked_dir("quarantine")),
    "quarantine/events": _corrupt_then(_linked_dir("quarantine/events")),
    "archive": _linked_dir("archive"),
    "archive/events/requests": _linked_dir("archive/events/requests"),
}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root`: its bytes and mtime (what "untouched" means)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_planted_link_is_never_followed(case: str, built: Path, tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    shutil.copytree(built, data, symlinks=True)
    outside.mkdir()
    link = CASES[case](data, outside)
    assert link.is_symlink()
    before = snapshot(outside)
    assert before
    runs = [["--data-dir", str(data), *command] for command in COMMANDS]
    results = run_batch(runs, tmp_path)
    assert snapshot(outside) == before, "a file outside the data directory was touched"
    for result in results:
        command, code, err = result["args"][2], result["code"], result["err"]
        assert "Traceback" not in err, f"{command}: {err}"
        if code != 0:
            assert code == 1, f"{command}: {err}"
            (line,) = err.splitlines()
            assert line.startswith("error: ") and str(link) in line, f"{command}: {line}"


@pytest.mark.parametrize("command", [["aggregate"], ["compact", "--before", "2999-01-01"]])
def test_the_commands_of_the_issue_refuse_the_link_in_their_own_process(
    command: list[str], built: Path, tmp_path: Path
) -> None:
    """As reported: a `.lock` link made `aggregate` empty an outside file, and a linked partition
    made `compact` delete the files outside. `python -m pipeline`, one command, one process."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    shutil.copytree(built, data, symlinks=True)
    outside.mkdir()
    plant = CASES[".lock"] if command[0] == "aggregate" else CASES["events/requests/date=D"]
    link = plant(data, outside)
    before = snapshot(outside)
    result = run_pipeline("--data-dir", str(data), *command, cwd=tmp_path)
    assert snapshot(outside) == before
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {link} is a symbolic link; links inside the data directory are never "
        "followed: remove it (or put what it points to in its place) and run again\n"
    )


def test_a_data_dir_that_is_itself_a_link_works(built: Path, tmp_path: Path) -> None:
    """The user's own link to the data directory is followed on purpose."""
    real = tmp_path / "real"
    shutil.copytree(built, real, symlinks=True)
    (tmp_path / "data").symlink_to(real, target_is_directory=True)
    for command in (["aggregate"], ["compact", "--before", "2999-01-01"]):
        result = run_pipeline("--data-dir", str(tmp_path / "data"), *command, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert [p.name for p in (real / PARTITION).iterdir()][0].startswith("compacted-")
