"""recommend's pure transform: the rules over benchmark results and profiles, and the Markdown.

The rules themselves are `stages.recommend.rules`; this applies all of them to the latest runs
and orders the output (priority, rule, scenario, target), so equal inputs give equal bytes.
"""

from __future__ import annotations

import polars as pl

from schemas import RecommendSettings
from stages.recommend.recommendation import ORDER, RECOMMENDATION_SCHEMA
from stages.recommend.rules import RULES

__all__ = ["latest_results", "recommend", "to_markdown"]


def latest_results(results: pl.DataFrame) -> pl.DataFrame:
    """The latest run of each (scenario, target, concurrency), by start time."""
    return (
        results.sort(["timestamp", "run_id"])
        .group_by(["scenario", "target", "concurrency"], maintain_order=True)
        .last()
    )


def recommend(
    results: pl.DataFrame, profiles: pl.DataFrame, settings: RecommendSettings
) -> pl.DataFrame:
    """Every rule over the results' latest runs and the profiles, in a fixed order; `settings`
    are the rules' thresholds (the config's `[recommend]`)."""
    results = results.filter(pl.col("run_status").is_in(("completed", "timed_out")))
    latest = latest_results(results)
    rows = [rec.row() for rule in RULES for rec in rule(results, latest, profiles, settings)]
    frame = (
        pl.DataFrame(rows, schema=RECOMMENDATION_SCHEMA, orient="row")
        if rows
        else RECOMMENDATION_SCHEMA.to_frame()
    )
    return frame.sort(list(ORDER), nulls_last=True)


def to_markdown(recommendations: pl.DataFrame) -> str:
    """recommendations.md: grouped by priority, each with its evidence and runs."""
    lines = ["# Recommendations", ""]
    if recommendations.is_empty():
        return "\n".join([*lines, "Nothing to recommend: no rule fired on the latest results.", ""])
    for priority in ("high", "medium", "low"):
        group = recommendations.filter(pl.col("priority") == priority)
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
    return "\n".join(lines)
