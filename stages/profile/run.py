"""profile's thin wrapper: read results, compute trends, write the profiles file under the lock."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.store.backend import Writer
from pipeline.store.layout import PROFILES
from pipeline.store.location import Location, open_store
from pipeline.store.lock import DEFAULT_LOCK, LockOptions
from pipeline.store.outputs import parquet_writer
from schemas import TrendSettings
from stages.aggregate.run import read_results
from stages.profile.transform import PROFILE_KEYS, profile

__all__ = ["ProfileSummary", "run_profile"]


@dataclass(frozen=True)
class ProfileSummary:
    path: str
    """Where the profiles went (a path, or an object-store URL)."""
    profiles: pl.DataFrame

    @property
    def regressions(self) -> pl.DataFrame:
        return self.profiles.filter(pl.col("regression"))


def run_profile(
    data_dir: Location, settings: TrendSettings, lock: LockOptions = DEFAULT_LOCK
) -> ProfileSummary:
    store = open_store(data_dir)

    def build() -> tuple[pl.DataFrame, list[tuple[str, Writer]]]:
        frame = profile(read_results(store).lazy(), settings)
        return frame, [(PROFILES, parquet_writer(frame, PROFILE_KEYS))]

    frame = store.write_outputs("profiles", build, lock)
    return ProfileSummary(store.where(PROFILES), frame)
