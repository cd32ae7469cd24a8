"""Where everything lives under the data directory: DESIGN.md's layout, spelled once.

Every other module asks this one for a key (a relative POSIX path under the data directory) or,
on the local file system, a `Layout` path; none builds one from a folder name of its own. The
same keys name the files of a local folder and the objects under an object-store prefix.

    DATA/events/<table>/date=YYYY-MM-DD/<run>-<writer>.<token>-<seq>.arrow   the event log
    DATA/.staging/<uuid>.tmp                                                 files being written (local)
    DATA/.lock                                                               the derived stages' lock (local)
    DATA/results/{benchmark_results,timeseries,sweeps}.parquet               aggregate
    DATA/profiles/performance_profiles.parquet                               profile
    DATA/recommendations/recommendations.{parquet,md}                        recommend
    DATA/quarantine/events/<table>/date=D/<file>                             corrupt files moved aside
    DATA/archive/events/<table>/date=D/                                      partitions archived

On an object store an output folder holds `current.json` (the pointer) and `versions/` (the
content-addressed files it names) instead of the files themselves (`pipeline.store.objstore`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError

__all__ = [
    "LOCK_NAME",
    "PROFILES",
    "RECOMMENDATIONS",
    "RECOMMENDATIONS_MD",
    "RESULTS",
    "STAGING_DIR",
    "SWEEPS",
    "TIMESERIES",
    "Layout",
    "archive_key",
    "partition_key",
    "quarantine_key",
    "require_data_dir",
    "table_key",
]

STAGING_DIR = ".staging"
LOCK_NAME = ".lock"
_EVENTS = "events"

RESULTS = "results/benchmark_results.parquet"
TIMESERIES = "results/timeseries.parquet"
SWEEPS = "results/sweeps.parquet"
PROFILES = "profiles/performance_profiles.parquet"
RECOMMENDATIONS = "recommendations/recommendations.parquet"
RECOMMENDATIONS_MD = "recommendations/recommendations.md"


def table_key(table: str) -> str:
    return f"{_EVENTS}/{table}"


def partition_key(table: str, day: str) -> str:
    return f"{table_key(table)}/date={day}"


def quarantine_key(table: str, day: str, name: str) -> str:
    """Where a corrupt event file is moved (never deleted)."""
    return f"quarantine/{partition_key(table, day)}/{name}"


def archive_key(table: str, day: str) -> str:
    """Where an archived partition goes (replay no longer reads it)."""
    return f"archive/{partition_key(table, day)}"


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
    """The paths of one local data directory (the keys above, below its folder)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)

    def path(self, key: str) -> Path:
        return self.data_dir / key

    @property
    def events(self) -> Path:
        return self.data_dir / _EVENTS

    def table(self, table: str) -> Path:
        return self.path(table_key(table))

    def partition(self, table: str, day: str) -> Path:
        return self.path(partition_key(table, day))

    @property
    def staging(self) -> Path:
        return self.data_dir / STAGING_DIR

    @property
    def lock(self) -> Path:
        return self.data_dir / LOCK_NAME

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def results(self) -> Path:
        return self.path(RESULTS)

    @property
    def timeseries(self) -> Path:
        return self.path(TIMESERIES)

    @property
    def sweeps(self) -> Path:
        return self.path(SWEEPS)

    @property
    def profiles(self) -> Path:
        return self.path(PROFILES)

    @property
    def recommendations(self) -> Path:
        return self.path(RECOMMENDATIONS)

    @property
    def recommendations_md(self) -> Path:
        return self.path(RECOMMENDATIONS_MD)
