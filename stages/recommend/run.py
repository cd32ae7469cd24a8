"""recommend's thin wrapper: read results and profiles, apply the rules, write Parquet and Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.store.layout import Layout
from pipeline.store.lock import DEFAULT_LOCK, LockOptions, exclusive_lock
from pipeline.store.outputs import parquet_writer, read_output, replace_outputs
from schemas import CompareSettings, RecommendSettings
from stages.aggregate.run import read_results
from stages.compare.selection import PassedOver
from stages.recommend.recommendation import ORDER
from stages.recommend.transform import recommend, to_markdown

__all__ = ["RecommendSummary", "run_recommend"]


@dataclass(frozen=True)
class RecommendSummary:
    path: Path
    markdown: Path
    recommendations: pl.DataFrame
    passed_over: tuple[PassedOver, ...] = ()


def run_recommend(
    data_dir: Path,
    settings: RecommendSettings,
    selection: CompareSettings,
    lock: LockOptions = DEFAULT_LOCK,
) -> RecommendSummary:
    """The rules with `settings` (the config's `[recommend]`) on the runs chosen by `selection`
    (its `[compare]`; both required so that no caller can fall back to the defaults by
    forgetting them) over the data directory's outputs."""
    layout = Layout(data_dir)
    with exclusive_lock(data_dir, lock):
        results = read_results(data_dir)
        profiles = read_output(layout.profiles, "profile")
        found = recommend(results, profiles, settings, selection.min_requests)
        frame = found.frame
        text = to_markdown(found).encode()
        replace_outputs(  # the Parquet and its Markdown: both or neither
            data_dir,
            [
                (layout.recommendations, parquet_writer(frame, ORDER)),
                (layout.recommendations_md, lambda handle: handle.write(text)),
            ],
        )
    return RecommendSummary(
        layout.recommendations, layout.recommendations_md, frame, found.passed_over
    )
