"""Where everything lives under the data directory: DESIGN.md's layout, spelled once.

Every other module asks a `Layout` for a path; none builds one from a folder name of its own, so
the layout can change (or move to an object store) in this one place.

    DATA/events/<table>/date=YYYY-MM-DD/<run>-<writer>.<token>-<seq>.arrow   the event log
    DATA/.staging/<uuid>.tmp                                                 files being written
    DATA/.lock                                                               the derived stages' lock
    DATA/results/{benchmark_results,timeseries,sweeps}.parquet               aggregate
    DATA/profiles/performance_profiles.parquet                               profile
    DATA/recommendations/recommendations.{parquet,md}                        recommend
    DATA/quarantine/events/<table>/date=D/<file>                             corrupt files moved aside
    DATA/archive/events/<table>/date=D/                                      partitions archived
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError

__all__ = ["LOCK_NAME", "STAGING_DIR", "Layout", "require_data_dir"]

STAGING_DIR = ".staging"
LOCK_NAME = ".lock"
_EVENTS = "events"


def require_data_dir(data_dir: Path | str) -> Path:
    """The data directory, which must exist: a stage that reads it never creates it (a mistyped
    `--data-dir` would otherwise "succeed" with empty outputs in a new folder)."""
    path = Path(data_dir)
    if not path.is_dir():
        raise InputError(
            f"no data directory at {path} (is --data-dir right? `pipeline execute` makes it)"
        )
    return path


class Layout:
    """The paths of one data directory."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)

    # -- the event log ---------------------------------------------------------------------------

    @property
    def events(self) -> Path:
        return self.data_dir / _EVENTS

    def table(self, table: str) -> Path:
        return self.events / table

    def partition(self, table: str, day: str) -> Path:
        return self.table(table) / f"date={day}"

    @property
    def staging(self) -> Path:
        return self.data_dir / STAGING_DIR

    @property
    def lock(self) -> Path:
        return self.data_dir / LOCK_NAME

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    def quarantined(self, table: str, day: str, name: str) -> Path:
        """Where a corrupt event file is moved (never deleted)."""
        return self.quarantine / _EVENTS / table / f"date={day}" / name

    def archived(self, table: str, day: str) -> Path:
        """Where an archived partition goes (replay no longer reads it)."""
        return self.data_dir / "archive" / _EVENTS / table / f"date={day}"

    # -- the outputs -----------------------------------------------------------------------------

    @property
    def results(self) -> Path:
        return self.data_dir / "results" / "benchmark_results.parquet"

    @property
    def timeseries(self) -> Path:
        return self.data_dir / "results" / "timeseries.parquet"

    @property
    def sweeps(self) -> Path:
        return self.data_dir / "results" / "sweeps.parquet"

    @property
    def profiles(self) -> Path:
        return self.data_dir / "profiles" / "performance_profiles.parquet"

    @property
    def recommendations(self) -> Path:
        return self.data_dir / "recommendations" / "recommendations.parquet"

    @property
    def recommendations_md(self) -> Path:
        return self.data_dir / "recommendations" / "recommendations.md"
