"""recommend's pure transform: the rules over benchmark results and profiles, and the Markdown.

The rules themselves are `stages.recommend.rules`; this applies all of them to the run that
stands for each configuration (compare's selection rule) and orders the output (priority, rule,
scenario, target), so equal inputs give equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from schemas import RecommendSettings
from stages.compare.selection import USABLE_STATUSES, PassedOver, select_runs
from stages.recommend.recommendation import ORDER, RECOMMENDATION_SCHEMA
from stages.recommend.rules import RULES

__all__ = ["SELECTION_KEYS", "Recommendations", "recommend", "to_markdown"]


@dataclass(frozen=True)
class Recommendations:
    """The rows (`RECOMMENDATION_SCHEMA`) and the configurations whose latest run was not used."""

    frame: pl.DataFrame
    passed_over: tuple[PassedOver, ...] = ()


SELECTION_KEYS = ("scenario", "target", "mode", "concurrency")
"""Recommend looks at each configuration on its own (a sweep keeps one run per concurrency)."""


def recommend(
    results: pl.DataFrame, profiles: pl.DataFrame, settings: RecommendSettings, min_requests: int
) -> Recommendations:
    """Every rule over the runs that stand for each configuration and the profiles, in a fixed
    order. `settings` are the rules' thresholds (the config's `[recommend]`); which run stands
    for a configuration is compare's rule (`stages.compare.selection`) with `min_requests`
    (`[compare] min_requests`), so a smoke test never replaces a full run here either."""
    selection = select_runs(results, SELECTION_KEYS, min_requests)
    results = results.filter(pl.col("run_status").is_in(USABLE_STATUSES))
    latest = selection.chosen
    rows = [rec.row() for rule in RULES for rec in rule(results, latest, profiles, settings)]
    frame = (
        pl.DataFrame(rows, schema=RECOMMENDATION_SCHEMA, orient="row")
        if rows
        else RECOMMENDATION_SCHEMA.to_frame()
    )
    return Recommendations(frame.sort(list(ORDER), nulls_last=True), selection.passed_over)


def to_markdown(recommendations: Recommendations) -> str:
    """recommendations.md: grouped by priority, each with its evidence and runs, then the runs
    that were passed over (a smoke test, an interrupted run) and why."""
    lines = ["# Recommendations", ""]
    frame = recommendations.frame
    if frame.is_empty():
        lines += ["Nothing to recommend: no rule fired on the latest results.", ""]
    for priority in ("high", "medium", "low"):
        group = frame.filter(pl.col("priority") == priority)
        if group.is_empty():
            continue
        lines += [f"## {priority.capitalize()} priority", ""]
        for row in group.iter_rows(named=True):
            lines += [
                f"### {row['title']}",
                "",
                row["description"],
                "",
                f"- Expected impact: {row['expected_impact']}",
                f"- Rule: `{row['rule_id']}` ({row['category']})",
                f"- Runs: {', '.join(f'`{r}`' for r in row['evidence_run_ids'])}",
                f"- Evidence: `{row['evidence']}`",
                "",
            ]
    if recommendations.passed_over:
        lines += ["## Runs not used", ""]
        lines += [f"- {p.sentence()}" for p in recommendations.passed_over]
        lines.append("")
    return "\n".join(lines)
