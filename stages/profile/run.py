"""profile's thin wrapper: read results, compute trends, write the profiles file under the lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.store.layout import Layout
from pipeline.store.lock import DEFAULT_LOCK, LockOptions, exclusive_lock
from pipeline.store.outputs import write_output
from schemas import TrendSettings
from stages.aggregate.run import read_results
from stages.profile.transform import PROFILE_KEYS, profile

__all__ = ["ProfileSummary", "run_profile"]


@dataclass(frozen=True)
class ProfileSummary:
    path: Path
    profiles: pl.DataFrame

    @property
    def regressions(self) -> pl.DataFrame:
        return self.profiles.filter(pl.col("regression"))


def run_profile(
    data_dir: Path, settings: TrendSettings, lock: LockOptions = DEFAULT_LOCK
) -> ProfileSummary:
    layout = Layout(data_dir)
    with exclusive_lock(data_dir, lock):
        results = read_results(data_dir)
        frame = profile(results.lazy(), settings)
        write_output(frame, layout.profiles, PROFILE_KEYS, data_dir)
    return ProfileSummary(layout.profiles, frame)
