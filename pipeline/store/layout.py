"""Where each output lives under the data directory (DESIGN.md's layout, in one place)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["Layout"]


class Layout:
    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)

    @property
    def results(self) -> Path:
        return self.data_dir / "results" / "benchmark_results.parquet"

    @property
    def timeseries(self) -> Path:
        return self.data_dir / "results" / "timeseries.parquet"

    @property
    def profiles(self) -> Path:
        return self.data_dir / "profiles" / "performance_profiles.parquet"

    @property
    def recommendations(self) -> Path:
        return self.data_dir / "recommendations" / "recommendations.parquet"

    @property
    def recommendations_md(self) -> Path:
        return self.data_dir / "recommendations" / "recommendations.md"
