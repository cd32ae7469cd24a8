"""recommend's pure transform: rules over benchmark results and profiles.

Each rule is a small function that looks at the latest results (and profiles) and returns
recommendations with the numbers and run ids they rest on. Rules never read files; the order of
the output is fixed (priority, rule, scenario, target), so equal inputs give equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

__all__ = [
    "RECOMMENDATION_SCHEMA",
    "RULES",
    "Recommendation",
    "Thresholds",
    "latest_results",
    "recommend",
    "to_markdown",
]

Priority = Literal["high", "medium", "low"]
_RANK = {"high": 0, "medium": 1, "low": 2}
_S, _F = pl.String(), pl.Float64()

RECOMMENDATION_SCHEMA = pl.Schema(
    [
        ("priority", _S),
        ("priority_rank", pl.Int64()),
        ("rule_id", _S),
        ("category", _S),
        ("title", _S),
        ("description", _S),
        ("evidence", _S),
        ("evidence_run_ids", pl.List(_S)),
        ("expected_impact", _S),
        ("provider", _S),
        ("model", _S),
        ("scenario", _S),
        ("target", _S),
    ]
)
"""The columns of recommendations/recommendations.parquet; `evidence` is a JSON object."""


@dataclass(frozen=True)
class Thresholds:
    """When each rule fires (documented in the README)."""

    rate_limited_share: float = 0.0
    """Any 429 fires the rule; at least `rate_limited_high` of attempts makes it high priority."""
    rate_limited_high: float = 0.05
    error_rate: float = 0.05
    tail_ratio: float = 3.0
    """p99 / p50 latency at or above this is a heavy tail."""
    tail_min_requests: int = 20
    knee_throughput_gain: float = 0.10
    knee_latency_growth: float = 0.25
    cheaper_cost_ratio: float = 0.7
    cheaper_latency_ratio: float = 1.1
    cheaper_error_margin: float = 0.01
    streaming_ttft_ratio: float = 0.9
    streaming_min_output_tokens: float = 20.0
    caching_min_input_tokens: float = 1024.0
    caching_max_cached_share: float = 0.1
    memory_bytes: int = 1 << 30


@dataclass(frozen=True)
class Recommendation:
    priority: Priority
    rule_id: str
    category: str
    title: str
    description: str
    evidence: dict[str, Any]
    run_ids: tuple[str, ...]
    expected_impact: str
    subject: dict[str, str | None] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        subject = {k: self.subject.get(k) for k in ("provider", "model", "scenario", "target")}
        return {
            "priority": self.priority,
            "priority_rank": _RANK[self.priority],
            "rule_id": self.rule_id,
            "category": self.category,
            "title": self.title,
            "description": self.description,
            "evidence": json.dumps(self.evidence, sort_keys=True, default=str),
            "evidence_run_ids": list(self.run_ids),
            "expected_impact": self.expected_impact,
            **subject,
        }


def _subject(row: dict[str, Any]) -> dict[str, str | None]:
    return {k: row.get(k) for k in ("provider", "model", "scenario", "target")}


def latest_results(results: pl.DataFrame) -> pl.DataFrame:
    """The latest run of each (scenario, target, concurrency), by start time."""
    return (
        results.sort(["timestamp", "run_id"])
        .group_by(["scenario", "target", "concurrency"], maintain_order=True)
        .last()
    )


Rule = Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame, Thresholds], Iterator[Recommendation]]


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(float(x), digits)


def rule_degrading_trend(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    """A degrading trend or a degrading change point: the one to act on first."""
    for row in profiles.filter(pl.col("regression")).iter_rows(named=True):
        metrics = {
            m: {
                "trend": row[f"{m}_trend"],
                "relative_change": _r(row[f"{m}_relative_change"], 4),
                "confidence": _r(row[f"{m}_confidence"], 4),
                "change_point_run_id": row[f"{m}_change_point_run_id"],
                "change_point_relative_change": _r(row[f"{m}_change_point_relative_change"], 4),
            }
            for m in ("latency", "throughput", "error_rate", "cost_efficiency")
            if row[f"{m}_trend"] == "degrading" or row[f"{m}_change_point_direction"] == "degrading"
        }
        runs = tuple(
            r
            for r in (
                row["first_run_id"],
                *(v["change_point_run_id"] for v in metrics.values()),
                row["latest_run_id"],
            )
            if r
        )
        yield Recommendation(
            "high",
            "trend-degrading",
            "regression",
            f"{row['target']} got worse on {row['scenario']}: {', '.join(metrics)}",
            f"{row['regression_reasons']}. Compare the runs around the change (config_hash, "
            "provider status pages, model version) before trusting this target's latest numbers.",
            {"metrics": metrics, "data_points": row["data_points"]},
            tuple(dict.fromkeys(runs)),
            "Catch a provider-side regression before it reaches users.",
            _subject(row),
        )


def rule_rate_limited(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    for row in latest.filter(pl.col("error_rate_limited") > 0).iter_rows(named=True):
        share = row["error_rate_limited"] / max(row["operations"], 1)
        if share <= t.rate_limited_share:
            continue
        yield Recommendation(
            "high" if share >= t.rate_limited_high else "medium",
            "rate-limited",
            "reliability",
            f"{row['target']} is rate limited at concurrency {row['concurrency']}",
            f"{row['error_rate_limited']} of {row['operations']} attempts ({share:.1%}) got HTTP 429 "
            f"on {row['scenario']}. Lower the concurrency below {row['concurrency']}, turn on "
            "retries with backoff (max_retries; retry-after is honoured), or ask the provider "
            "for a higher quota.",
            {
                "rate_limited": row["error_rate_limited"],
                "attempts": row["operations"],
                "share": _r(share, 4),
            },
            (row["run_id"],),
            f"Up to {share:.1%} fewer failed requests.",
            _subject(row),
        )


def rule_error_rate(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    """Failures other than 429s (those have their own rule) above the threshold."""
    kinds = [
        c
        for c in latest.columns
        if c.startswith("error_") and c not in ("error_rate", "error_rate_limited")
    ]
    other = (pl.col("failed") - pl.col("error_rate_limited")) / pl.col("operations")
    for row in latest.filter((pl.col("operations") > 0) & (other >= t.error_rate)).iter_rows(
        named=True
    ):
        counts = {c.removeprefix("error_"): row[c] for c in kinds if row[c]}
        if not counts:
            continue
        worst = max(counts, key=lambda k: (counts[k], k))
        share = (row["failed"] - row["error_rate_limited"]) / row["operations"]
        yield Recommendation(
            "high",
            "error-rate",
            "reliability",
            f"{row['target']} fails {share:.1%} of requests on {row['scenario']}",
            f"Most failures are {worst} ({counts[worst]} of {row['operations']} attempts). Read "
            "the error_message of those events (`requests` table) and the provider's status "
            "page; consider a fallback target.",
            {"error_share": _r(share, 4), "errors_by_type": counts},
            (row["run_id"],),
            f"Up to {share:.1%} more successful requests.",
            _subject(row),
        )


def rule_tail_latency(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    heavy = latest.filter(
        (pl.col("successful") >= t.tail_min_requests)
        & (pl.col("latency_p50_ms") > 0)
        & (pl.col("latency_p99_ms") >= t.tail_ratio * pl.col("latency_p50_ms"))
    )
    for row in heavy.iter_rows(named=True):
        ratio = row["latency_p99_ms"] / row["latency_p50_ms"]
        yield Recommendation(
            "medium",
            "tail-latency",
            "latency",
            f"{row['target']} has a heavy latency tail on {row['scenario']} (p99 {ratio:.1f}x p50)",
            f"p50 {row['latency_p50_ms']:.0f} ms but p99 {row['latency_p99_ms']:.0f} ms. Set a "
            "request timeout near the p95, retry or hedge slow requests, or cap max_tokens; "
            "check whether the tail comes from queueing (queue_us) or the provider (ttft_us).",
            {
                "p50_ms": _r(row["latency_p50_ms"]),
                "p99_ms": _r(row["latency_p99_ms"]),
                "ratio": _r(ratio),
            },
            (row["run_id"],),
            f"A p99 closer to {row['latency_p95_ms']:.0f} ms (the p95).",
            _subject(row),
        )


def rule_saturation_knee(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    """Throughput that stops growing with concurrency while latency grows: the knee."""
    closed = latest.filter((pl.col("mode") == "closed") & (pl.col("successful") > 0))
    for (scenario, target), sweep in closed.group_by(["scenario", "target"], maintain_order=True):
        if sweep.height < 3:
            continue
        sweep = sweep.sort("concurrency")
        rows = sweep.to_dicts()
        for before, after in zip(rows, rows[1:], strict=False):
            gain = (
                after["throughput_rps"] / before["throughput_rps"] - 1
                if before["throughput_rps"]
                else 0.0
            )
            growth = (
                after["latency_p50_ms"] / before["latency_p50_ms"] - 1
                if before["latency_p50_ms"]
                else 0.0
            )
            if gain < t.knee_throughput_gain and growth > t.knee_latency_growth:
                yield Recommendation(
                    "medium",
                    "saturation-knee",
                    "capacity",
                    f"{target} saturates at concurrency {before['concurrency']} on {scenario}",
                    f"From concurrency {before['concurrency']} to {after['concurrency']}, "
                    f"throughput grew {gain:+.0%} ({before['throughput_rps']:.2f} → "
                    f"{after['throughput_rps']:.2f} req/s) while p50 latency grew {growth:+.0%}. "
                    f"Run at about {before['concurrency']} in flight; more only queues.",
                    {
                        "concurrency": [r["concurrency"] for r in rows],
                        "throughput_rps": [_r(r["throughput_rps"]) for r in rows],
                        "latency_p50_ms": [_r(r["latency_p50_ms"]) for r in rows],
                    },
                    tuple(r["run_id"] for r in rows),
                    f"The same throughput with {growth:.0%} less latency.",
                    _subject(before),
                )
                break


def rule_cheaper_target(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    """A cheaper target with similar latency and reliability for the same scenario."""
    priced = (
        latest.filter(pl.col("cost_per_request_usd").is_not_null() & (pl.col("successful") > 0))
        .sort(["timestamp", "run_id"])
        .group_by(["scenario", "target"], maintain_order=True)
        .last()
    )
    for (scenario,), group in priced.group_by(["scenario"], maintain_order=True):
        rows = group.sort("target").to_dicts()
        for current in rows:
            options = [
                other
                for other in rows
                if other["target"] != current["target"]
                and other["cost_per_request_usd"]
                <= t.cheaper_cost_ratio * current["cost_per_request_usd"]
                and other["latency_p95_ms"] <= t.cheaper_latency_ratio * current["latency_p95_ms"]
                and other["error_rate"] <= current["error_rate"] + t.cheaper_error_margin
            ]
            if not options:
                continue
            best = min(options, key=lambda o: (o["cost_per_request_usd"], o["target"]))
            saving = 1 - best["cost_per_request_usd"] / current["cost_per_request_usd"]
            yield Recommendation(
                "medium",
                "cheaper-target",
                "cost",
                f"{best['target']} costs {saving:.0%} less than {current['target']} on {scenario}",
                f"{best['target']}: ${best['cost_per_request_usd']:.6f}/request, p95 "
                f"{best['latency_p95_ms']:.0f} ms, errors {best['error_rate']:.1%}; "
                f"{current['target']}: ${current['cost_per_request_usd']:.6f}/request, p95 "
                f"{current['latency_p95_ms']:.0f} ms, errors {current['error_rate']:.1%}.",
                {
                    "current": {
                        k: current[k]
                        for k in ("target", "cost_per_request_usd", "latency_p95_ms", "error_rate")
                    },
                    "alternative": {
                        k: best[k]
                        for k in ("target", "cost_per_request_usd", "latency_p95_ms", "error_rate")
                    },
                },
                (current["run_id"], best["run_id"]),
                f"{saving:.0%} lower cost per request at similar latency and reliability.",
                _subject(current),
            )


def rule_streaming(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    """Unstreamed answers: the user waits for the whole response before the first token."""
    per_request = pl.col("output_tokens") / pl.col("successful")
    unstreamed = latest.filter(
        (pl.col("successful") > 0)
        & (per_request >= t.streaming_min_output_tokens)
        & (
            pl.col("ttft_p50_ms").is_null()
            | (pl.col("ttft_p50_ms") >= t.streaming_ttft_ratio * pl.col("latency_p50_ms"))
        )
    )
    for row in unstreamed.iter_rows(named=True):
        tpot = row["tpot_mean_ms"]
        yield Recommendation(
            "low",
            "enable-streaming",
            "latency",
            f"Stream {row['target']}'s answers on {row['scenario']}",
            f"The first token arrives with the last (TTFT p50 {row['ttft_p50_ms'] or row['latency_p50_ms']:.0f} ms "
            f"≈ latency p50 {row['latency_p50_ms']:.0f} ms). Streaming shows text as it is generated.",
            {
                "ttft_p50_ms": _r(row["ttft_p50_ms"]),
                "latency_p50_ms": _r(row["latency_p50_ms"]),
                "tpot_mean_ms": _r(tpot),
            },
            (row["run_id"],),
            "Time to first token drops from the whole answer to the prefill time.",
            _subject(row),
        )


def rule_prompt_caching(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    per_request = pl.col("input_tokens") / pl.col("successful")
    cacheable = latest.filter(
        (pl.col("successful") > 0)
        & (per_request >= t.caching_min_input_tokens)
        & (pl.col("cached_tokens") <= t.caching_max_cached_share * pl.col("input_tokens"))
    )
    for row in cacheable.iter_rows(named=True):
        mean_input = row["input_tokens"] / row["successful"]
        saving = None
        if (
            row["price_input_per_mtok"] is not None
            and row["price_cached_input_per_mtok"] is not None
        ):
            saving = (
                row["input_tokens"]
                * (row["price_input_per_mtok"] - row["price_cached_input_per_mtok"])
                / 1e6
            )
        yield Recommendation(
            "low",
            "prompt-caching",
            "cost",
            f"Cache the repeated prompt prefix of {row['scenario']} on {row['target']}",
            f"Requests carry {mean_input:.0f} input tokens on average and "
            f"{row['cached_tokens']} of {row['input_tokens']} were served from cache. Put the "
            "stable part (system prompt, documents) first and enable the provider's prompt caching.",
            {
                "mean_input_tokens": _r(mean_input, 1),
                "cached_tokens": row["cached_tokens"],
                "max_saving_usd": _r(saving, 6),
            },
            (row["run_id"],),
            "Lower input cost and TTFT on cache hits"
            + (f" (at most ${saving:.4f} on this run)." if saving is not None else "."),
            _subject(row),
        )


def rule_client_memory(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, t: Thresholds
) -> Iterator[Recommendation]:
    for row in latest.filter(pl.col("peak_memory_bytes") >= t.memory_bytes).iter_rows(named=True):
        gib = row["peak_memory_bytes"] / (1 << 30)
        yield Recommendation(
            "low",
            "client-memory",
            "client",
            f"The benchmark client used {gib:.1f} GiB on {row['scenario']} against {row['target']}",
            "A client near its memory limit distorts timings (GC pauses, swapping). Lower the "
            "concurrency, shorten max_tokens, or spread the load over worker processes.",
            {"peak_memory_bytes": row["peak_memory_bytes"], "concurrency": row["concurrency"]},
            (row["run_id"],),
            "Trustworthy timings at the same load.",
            _subject(row),
        )


RULES: tuple[Rule, ...] = (
    rule_degrading_trend,
    rule_rate_limited,
    rule_error_rate,
    rule_tail_latency,
    rule_saturation_knee,
    rule_cheaper_target,
    rule_streaming,
    rule_prompt_caching,
    rule_client_memory,
)


def recommend(
    results: pl.DataFrame, profiles: pl.DataFrame, thresholds: Thresholds | None = None
) -> pl.DataFrame:
    """Every rule over the results' latest runs and the profiles, in a fixed order."""
    limits = thresholds or Thresholds()
    results = results.filter(pl.col("run_status").is_in(("completed", "timed_out")))
    latest = latest_results(results)
    rows = [rec.row() for rule in RULES for rec in rule(results, latest, profiles, limits)]
    frame = (
        pl.DataFrame(rows, schema=RECOMMENDATION_SCHEMA, orient="row")
        if rows
        else RECOMMENDATION_SCHEMA.to_frame()
    )
    return frame.sort(["priority_rank", "rule_id", "scenario", "target", "title"], nulls_last=True)


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
