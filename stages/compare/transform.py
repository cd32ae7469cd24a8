"""compare's pure transform: one run of each target for a scenario, scored 0-100.

Which run stands for a target is `stages.compare.selection`'s rule (the latest at its latest
settings with at least `[compare] min_requests` attempts), shared with recommend.

Scores per criterion are relative to the best target in the comparison (the best gets 1):
latency = mean of best_p50/p50 and best_p95/p95; cost = best/own USD per million output tokens;
reliability = success rate. Overall = 100 × weighted mean with the configured weights. When any
target lacks a price, cost is left out of every target's score (and the result says so), so an
unpriced target is neither rewarded nor punished for it.

An SLO does not change the score (a run's attainment depends on the load it ran at, which the
score does not see); `Comparison.slo_sentence` says who meets it and at what attainment.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from schemas import CompareWeights
from stages.aggregate.slo import attainment_text
from stages.compare.selection import PassedOver, select_runs

__all__ = ["COMPARE_COLUMNS", "Comparison", "compare"]

COMPARE_COLUMNS = (
    "target",
    "provider",
    "model",
    "run_id",
    "mode",
    "concurrency",
    "operations",
    "successful",
    "latency_p50_ms",
    "latency_p95_ms",
    "ttft_p50_ms",
    "throughput_rps",
    "success_rate",
    "usd_per_million_output_tokens",
    "tokens_estimated",
    "latency_score",
    "cost_score",
    "reliability_score",
    "score",
    "slo",
    "slo_attainment",
    "slo_attainment_target",
    "goodput_rps",
    "slo_met",
)


@dataclass(frozen=True)
class Comparison:
    scenario: str
    table: pl.DataFrame
    fastest: str | None
    most_cost_effective: str | None
    most_reliable: str | None
    cost_included: bool
    passed_over: tuple[PassedOver, ...]
    """Targets whose latest run was not the one used (or that were left out), and why."""
    min_requests: int

    @property
    def slo_sentence(self) -> str | None:
        """`SLO ttft≤500ms at 95%: a meets it (99.0% of attempts, goodput 12.3 req/s); b misses
        it (80.0%, 4.1 req/s)`, best attainment first; None when no run had an SLO."""
        judged = self.table.filter(pl.col("slo").is_not_null()).sort(
            ["slo_attainment", "goodput_rps", "target"],
            descending=[True, True, False],
            nulls_last=True,
        )
        if judged.is_empty():
            return None
        parts = []
        for row in judged.iter_rows(named=True):
            verdict = "meets it" if row["slo_met"] else "misses it"
            attained = attainment_text(row["slo_attainment"])
            goodput = "-" if row["goodput_rps"] is None else f"{row['goodput_rps']:.4g}"
            parts.append(f"{row['target']} {verdict} ({attained} of attempts, {goodput} req/s)")
        labels = judged.select("slo", "slo_attainment_target").unique(maintain_order=True)
        if labels.height == 1:
            label, target = labels.row(0)
            head = f"SLO {label} at {attainment_text(target)}"
        else:
            head = "SLO (not the same for every target: compare with care)"
        return f"{head}: " + "; ".join(parts)

    @property
    def mixed_settings(self) -> bool:
        """The targets' runs were not all at one mode and concurrency (scores compare unlike)."""
        return self.table.select("mode", "concurrency").unique().height > 1


def _pick(table: pl.DataFrame, by: list[str], descending: bool = False) -> str | None:
    valid = table.drop_nulls(by[0])
    if valid.is_empty():
        return None
    return str(
        valid.sort([*by, "target"], descending=[descending] * len(by) + [False])["target"][0]
    )


def compare(
    results: pl.DataFrame, scenario: str, weights: CompareWeights, min_requests: int
) -> Comparison:
    """Each target's run for `scenario` (the selection rule with `min_requests`), scored."""
    selection = select_runs(
        results.filter(pl.col("scenario") == scenario), ("scenario", "target"), min_requests
    )
    latest = selection.chosen.sort("target").with_columns(
        (pl.col("successful") / pl.col("operations")).alias("success_rate"),
        pl.when(pl.col("output_tokens") > 0)
        .then(pl.col("cost_usd") / pl.col("output_tokens") * 1e6)
        .alias("usd_per_million_output_tokens"),
    )
    # A run in which nothing succeeded stays in the table (it is the target's latest evidence,
    # not a run to skip): it has no latency or cost, which score 0, and does not decide whether
    # cost can be scored.
    answered = latest.filter(pl.col("successful") > 0)
    cost_included = (
        answered.height > 0 and answered["usd_per_million_output_tokens"].null_count() == 0
    )
    w_cost = weights.cost if cost_included else 0.0
    total = weights.latency + w_cost + weights.reliability or 1.0
    table = latest.with_columns(
        (
            (
                pl.col("latency_p50_ms").min() / pl.col("latency_p50_ms")
                + pl.col("latency_p95_ms").min() / pl.col("latency_p95_ms")
            )
            / 2
        )
        .fill_nan(1.0)
        .fill_null(0.0)
        .alias("latency_score"),
        (pl.col("usd_per_million_output_tokens").min() / pl.col("usd_per_million_output_tokens"))
        .fill_nan(1.0)
        .alias("cost_score"),
        pl.col("success_rate").alias("reliability_score"),
    ).with_columns(
        (
            100
            * (
                weights.latency * pl.col("latency_score")
                + w_cost * pl.col("cost_score").fill_null(0.0)
                + weights.reliability * pl.col("reliability_score")
            )
            / total
        ).alias("score")
    )
    table = table.select(COMPARE_COLUMNS).sort(["score", "target"], descending=[True, False])
    return Comparison(
        scenario=scenario,
        table=table,
        fastest=_pick(table, ["latency_p50_ms", "latency_p95_ms"]),
        most_cost_effective=_pick(table, ["usd_per_million_output_tokens"]),
        most_reliable=None if table.is_empty() else _most_reliable(table),
        cost_included=cost_included,
        passed_over=selection.passed_over,
        min_requests=min_requests,
    )


def _most_reliable(table: pl.DataFrame) -> str:
    ordered = table.sort(
        ["success_rate", "latency_p50_ms", "target"], descending=[True, False, False]
    )
    return str(ordered["target"][0])
