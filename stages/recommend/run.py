"""recommend's thin wrapper: read results and profiles, apply the rules, write Parquet and Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.fsutil import replace_atomic, staged_file
from pipeline.layout import Layout
from pipeline.lock import exclusive_lock
from pipeline.outputs import read_output, write_output
from stages.recommend.transform import recommend, to_markdown

__all__ = ["RecommendSummary", "run_recommend"]

SORT = ("priority_rank", "rule_id", "scenario", "target", "title")


@dataclass(frozen=True)
class RecommendSummary:
    path: Path
    markdown: Path
    recommendations: pl.DataFrame


def run_recommend(data_dir: Path, lock_timeout_s: float = 30.0) -> RecommendSummary:
    layout = Layout(data_dir)
    with exclusive_lock(data_dir, lock_timeout_s):
        results = read_output(layout.results, "aggregate")
        profiles = read_output(layout.profiles, "profile")
        frame = recommend(results, profiles)
        write_output(frame, layout.recommendations, SORT, layout.staging)
        text = to_markdown(frame).encode()
        replace_atomic(
            staged_file(layout.staging, lambda handle: handle.write(text)),
            layout.recommendations_md,
        )
    return RecommendSummary(layout.recommendations, layout.recommendations_md, frame)
