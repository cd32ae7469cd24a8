"""recommend's thin wrapper: read results and profiles, apply the rules, write Parquet and Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import polars as pl

from pipeline.store.backend import Writer
from pipeline.store.layout import PROFILES, RECOMMENDATIONS, RECOMMENDATIONS_MD
from pipeline.store.location import Location, open_store
from pipeline.store.lock import DEFAULT_LOCK, LockOptions
from pipeline.store.outputs import parquet_writer, read_output
from schemas import CompareSettings, RecommendSettings
from stages.aggregate.run import read_results
from stages.compare.selection import PassedOver
from stages.recommend.recommendation import ORDER
from stages.recommend.transform import Recommendations, recommend, to_markdown

__all__ = ["RecommendSummary", "run_recommend"]


@dataclass(frozen=True)
class RecommendSummary:
    path: str
    markdown: str
    recommendations: pl.DataFrame
    passed_over: tuple[PassedOver, ...] = ()


def run_recommend(
    data_dir: Location,
    settings: RecommendSettings,
    selection: CompareSettings,
    lock: LockOptions = DEFAULT_LOCK,
) -> RecommendSummary:
    """The rules with `settings` (the config's `[recommend]`) on the runs chosen by `selection`
    (its `[compare]`; both required so that no caller can fall back to the defaults by
    forgetting them) over the data directory's outputs."""
    store = open_store(data_dir)

    def build() -> tuple[Recommendations, list[tuple[str, Writer]]]:
        results = read_results(store)
        profiles = read_output(store, PROFILES, "profile")
        found = recommend(results, profiles, settings, selection.min_requests)
        text = to_markdown(found).encode()

        def markdown(handle: BinaryIO) -> None:
            handle.write(text)

        # The Parquet and its Markdown: both or neither.
        return found, [
            (RECOMMENDATIONS, parquet_writer(found.frame, ORDER)),
            (RECOMMENDATIONS_MD, markdown),
        ]

    found = store.write_outputs("recommendations", build, lock)
    return RecommendSummary(
        store.where(RECOMMENDATIONS),
        store.where(RECOMMENDATIONS_MD),
        found.frame,
        found.passed_over,
    )
