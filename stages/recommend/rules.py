"""recommend's rules: each looks at the latest results (and the profiles) and yields advice.

A rule never reads files and takes its thresholds from a `RecommendSettings` (the config's
`[recommend]`), so what fires is set in one place; each result is built by field name, with the
numbers and run ids it rests on as evidence. The README's rule table lists every rule with the
settings it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from schemas import RecommendSettings
from stages.aggregate.slo import attainment_text
from stages.aggregate.sweeps import sweeps
from stages.profile.display import confidence_shown, trend_text
from stages.profile.transform import TRENDED
from stages.recommend.evidence import share_evidence
from stages.recommend.recommendation import SUBJECT_KEYS, Recommendation

__all__ = [
    "RULES",
    "Rule",
    "rule_cheaper_target",
    "rule_client_memory",
    "rule_degrading_trend",
    "rule_error_rate",
    "rule_prompt_caching",
    "rule_rate_limited",
    "rule_saturation_knee",
    "rule_slo_missed",
    "rule_streaming",
    "rule_sweep_capacity",
    "rule_tail_latency",
]

Rule = Callable[
    [pl.DataFrame, pl.DataFrame, pl.DataFrame, RecommendSettings], Iterator[Recommendation]
]
"""(all results, the latest of each scenario/target/concurrency, profiles, thresholds)."""


def _subject(row: dict[str, Any]) -> dict[str, str | None]:
    return {k: row.get(k) for k in SUBJECT_KEYS}


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(float(x), digits)


def rule_degrading_trend(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """A degrading trend or a degrading change point: the one to act on first."""
    for row in profiles.filter(pl.col("regression")).iter_rows(named=True):
        metrics = {
            m: {
                "trend": row[f"{m}_trend"],
                "relative_change": _r(row[f"{m}_relative_change"], 4),
                "confidence": confidence_shown(row[f"{m}_confidence"]),
                "change_point_run_id": row[f"{m}_change_point_run_id"],
                "change_point_relative_change": _r(row[f"{m}_change_point_relative_change"], 4),
            }
            for m in (metric.name for metric in TRENDED)
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
            priority="high",
            rule_id="trend-degrading",
            category="regression",
            title=f"{row['target']} got worse on {row['scenario']}: {', '.join(metrics)}",
            description=(
                f"Over {row['data_points']} runs: "
                + "; ".join(f"{m} {trend_text(row, m, numbers=True)}" for m in metrics)
                + ". Compare the runs around the change (config_hash, provider status pages, "
                "model version) before trusting this target's latest numbers."
            ),
            evidence={"metrics": metrics, "data_points": row["data_points"]},
            run_ids=tuple(dict.fromkeys(runs)),
            expected_impact="Catch a provider-side regression before it reaches users.",
            subject=_subject(row),
        )


def _calmer(
    latest: pl.DataFrame, row: dict[str, Any], limits: RecommendSettings
) -> dict[str, Any] | None:
    """The highest lower concurrency of the same scenario, target and mode whose run shows no
    significant rate limiting and a smaller share of 429s, if any: the evidence that fewer
    requests in flight would help (without it, "lower the concurrency" is a guess)."""
    share = row["error_rate_limited"] / row["operations"]
    lower = latest.filter(
        (pl.col("scenario") == row["scenario"])
        & (pl.col("target") == row["target"])
        & (pl.col("mode") == row["mode"])
        & (pl.col("concurrency") < row["concurrency"])
        & (pl.col("operations") > 0)
    ).sort("concurrency", descending=True)
    for other in lower.iter_rows(named=True):
        limited = other["error_rate_limited"]
        if limited / other["operations"] >= share:
            continue
        if not share_evidence(
            limited, other["operations"], limits.rate_limited_share, limits
        ).enough:
            return other
    return None


def rule_rate_limited(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """HTTP 429s: the provider refuses load, so fewer in flight or more quota beats retrying.

    Only on evidence: at least `min_events` 429s and a share significantly above
    `rate_limited_share`; high priority only when significantly above `rate_limited_high`. The
    advice to lower the concurrency is given only when a run at a lower one shows it helps.
    """
    for row in latest.filter(pl.col("error_rate_limited") > 0).iter_rows(named=True):
        limited, attempts = row["error_rate_limited"], row["operations"]
        found = share_evidence(limited, attempts, limits.rate_limited_share, limits)
        if not found.enough:
            continue
        high = share_evidence(limited, attempts, limits.rate_limited_high, limits)
        calmer = _calmer(latest, row, limits)
        retries = "turn on retries with backoff (max_retries; retry-after is honoured)"
        if calmer is not None:
            advice = (
                f"At concurrency {calmer['concurrency']} (run {calmer['run_id']}) "
                f"{calmer['error_rate_limited']} of {calmer['operations']} attempts got HTTP 429: "
                f"run at {calmer['concurrency']} in flight, or {retries}."
            )
        else:
            advice = (
                "No run at a lower concurrency shows whether fewer requests in flight would help: "
                f"{retries}, ask the provider for a higher quota, or run at a lower concurrency "
                "to find out."
            )
        yield Recommendation(
            priority="high" if high.enough else "medium",
            rule_id="rate-limited",
            category="reliability",
            title=f"{row['target']} is rate limited at concurrency {row['concurrency']}",
            description=(
                f"{limited} of {attempts} attempts ({found.share:.1%}) got HTTP 429 on "
                f"{row['scenario']}: {found.sentence()}. {advice}"
            ),
            evidence={
                "rate_limited": limited,
                "attempts": attempts,
                "share": _r(found.share, 4),
                "test": found.test(),
                "high_priority_test": high.test(),
                "lower_concurrency": None
                if calmer is None
                else {
                    k: calmer[k]
                    for k in ("run_id", "concurrency", "error_rate_limited", "operations")
                },
            },
            run_ids=(row["run_id"], *(() if calmer is None else (calmer["run_id"],))),
            expected_impact=f"Up to {found.share:.1%} fewer failed requests.",
            subject=_subject(row),
        )


def rule_error_rate(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """Failures other than 429s (those have their own rule), significantly above `error_rate`
    and at least `min_events` of them."""
    kinds = [
        c
        for c in latest.columns
        if c.startswith("error_") and c not in ("error_rate", "error_rate_limited")
    ]
    for row in latest.filter(pl.col("operations") > 0).iter_rows(named=True):
        failures = row["failed"] - row["error_rate_limited"]
        found = share_evidence(failures, row["operations"], limits.error_rate, limits)
        counts = {c.removeprefix("error_"): row[c] for c in kinds if row[c]}
        if not counts or not found.enough:
            continue
        worst = max(counts, key=lambda k: (counts[k], k))
        yield Recommendation(
            priority="high",
            rule_id="error-rate",
            category="reliability",
            title=f"{row['target']} fails {found.share:.1%} of requests on {row['scenario']}",
            description=(
                f"{failures} of {row['operations']} attempts failed: {found.sentence()}. Most "
                f"are {worst} ({counts[worst]}). Read the error_message of those events "
                "(`requests` table) and the provider's status page; consider a fallback target."
            ),
            evidence={
                "error_share": _r(found.share, 4),
                "errors_by_type": counts,
                "failures": failures,
                "attempts": row["operations"],
                "test": found.test(),
            },
            run_ids=(row["run_id"],),
            expected_impact=f"Up to {found.share:.1%} more successful requests.",
            subject=_subject(row),
        )


def rule_tail_latency(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """A p99 far above the p50: a few users wait much longer than the numbers suggest."""
    heavy = latest.filter(
        (pl.col("successful") >= limits.tail_min_requests)
        & (pl.col("latency_p50_ms") > 0)
        & (pl.col("latency_p99_ms") >= limits.tail_ratio * pl.col("latency_p50_ms"))
    )
    for row in heavy.iter_rows(named=True):
        ratio = row["latency_p99_ms"] / row["latency_p50_ms"]
        yield Recommendation(
            priority="medium",
            rule_id="tail-latency",
            category="latency",
            title=f"{row['target']} has a heavy latency tail on {row['scenario']} (p99 {ratio:.1f}x p50)",
            description=(
                f"p50 {row['latency_p50_ms']:.0f} ms but p99 {row['latency_p99_ms']:.0f} ms over "
                f"{row['successful']} successful requests. Set a "
                "request timeout near the p95, retry or hedge slow requests, or cap max_tokens; "
                "check whether the tail comes from queueing (queue_us) or the provider (ttft_us)."
            ),
            evidence={
                "p50_ms": _r(row["latency_p50_ms"]),
                "p99_ms": _r(row["latency_p99_ms"]),
                "ratio": _r(ratio),
                "successful": row["successful"],
                "min_requests": limits.tail_min_requests,
            },
            run_ids=(row["run_id"],),
            expected_impact=f"A p99 closer to {row['latency_p95_ms']:.0f} ms (the p95).",
            subject=_subject(row),
        )


def rule_saturation_knee(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """Throughput that stops growing with concurrency while latency grows: the knee."""
    # A sweep's steps have their own rule (sweep-capacity); this one reads runs that happen to
    # exist at several concurrencies.
    closed = latest.filter(
        (pl.col("mode") == "closed") & (pl.col("successful") > 0) & pl.col("sweep_id").is_null()
    )
    for (scenario, target), sweep in closed.group_by(["scenario", "target"], maintain_order=True):
        if sweep.height < limits.knee_min_concurrencies:
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
            if gain < limits.knee_throughput_gain and growth > limits.knee_latency_growth:
                yield Recommendation(
                    priority="medium",
                    rule_id="saturation-knee",
                    category="capacity",
                    title=f"{target} saturates at concurrency {before['concurrency']} on {scenario}",
                    description=(
                        f"From concurrency {before['concurrency']} to {after['concurrency']}, "
                        f"throughput grew {gain:+.0%} ({before['throughput_rps']:.2f} → "
                        f"{after['throughput_rps']:.2f} req/s) while p50 latency grew {growth:+.0%}. "
                        f"Run at about {before['concurrency']} in flight; more only queues."
                    ),
                    evidence={
                        "concurrency": [r["concurrency"] for r in rows],
                        "throughput_rps": [_r(r["throughput_rps"]) for r in rows],
                        "latency_p50_ms": [_r(r["latency_p50_ms"]) for r in rows],
                    },
                    run_ids=tuple(r["run_id"] for r in rows),
                    expected_impact=f"The same throughput with {growth:.0%} less latency.",
                    subject=_subject(before),
                )
                break


def _unit(axis: str) -> str:
    return "in flight" if axis == "concurrency" else "requests/s"


def rule_sweep_capacity(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """The answer of each target's latest sweep (`stages.aggregate.sweeps`): the load it holds
    under its SLO (high priority when not even the lowest load met it), and its knee."""
    answers = sweeps(results)
    latest_sweeps = (
        answers.sort(["timestamp", "sweep_id"])
        .group_by(["scenario", "target"], maintain_order=True)
        .last()
        .sort(["scenario", "target"])
    )
    for row in latest_sweeps.iter_rows(named=True):
        unit = _unit(row["axis"])
        knee = (
            f"The knee of its throughput-latency curve is at {row['knee_load']:g} {unit} "
            f"({row['knee_throughput_rps']:.2f} req/s at p50 {row['knee_latency_p50_ms']:.0f} ms):"
            " past it added load buys more waiting than throughput."
            if row["knee_load"] is not None
            else f"No knee up to {row['max_load']:g} {unit}: throughput still grew with load."
        )
        evidence = {
            "sweep_id": row["sweep_id"],
            "axis": row["axis"],
            "loads": row["loads"],
            "slo": row["slo"],
            "slo_target_attainment": row["slo_target_attainment"],
            "max_load_under_slo": row["max_load_under_slo"],
            "attainment_at_max": _r(row["attainment_at_max"], 4),
            "goodput_at_max_rps": _r(row["goodput_at_max_rps"]),
            "knee_load": row["knee_load"],
        }
        run_ids = tuple(
            r for r in (row["first_run_id"], row["run_id_at_max"], row["last_run_id"]) if r
        )
        subject = _subject(row)
        if row["slo"] is not None and row["max_load_under_slo"] is None:
            yield Recommendation(
                priority="high",
                rule_id="sweep-capacity",
                category="capacity",
                title=(
                    f"{row['target']} misses its SLO on {row['scenario']} even at "
                    f"{row['min_load']:g} {unit}"
                ),
                description=(
                    f"Sweep {row['sweep_id']}: no load met {row['slo']} for "
                    f"{attainment_text(row['slo_target_attainment'])} of attempts. {knee}"
                ),
                evidence=evidence,
                run_ids=run_ids,
                expected_impact="A faster target or a looser SLO; more load cannot help.",
                subject=subject,
            )
        elif row["slo"] is not None:
            best = row["max_load_under_slo"]
            tail = (
                "the highest load swept"
                if best == row["max_load"]
                else "the next load swept missed it"
            )
            yield Recommendation(
                priority="medium",
                rule_id="sweep-capacity",
                category="capacity",
                title=f"{row['target']} holds its SLO on {row['scenario']} up to {best:g} {unit}",
                description=(
                    f"Sweep {row['sweep_id']}: at {best:g} {unit} "
                    f"{attainment_text(row['attainment_at_max'])} of attempts met {row['slo']} "
                    f"({attainment_text(row['slo_target_attainment'])} needed), a goodput of "
                    f"{row['goodput_at_max_rps']:.2f} req/s; {tail}. {knee}"
                ),
                evidence=evidence,
                run_ids=run_ids,
                expected_impact=(
                    f"Keep the load at or below {best:g} {unit} to keep the SLO "
                    f"({row['goodput_at_max_rps']:.2f} good requests/s)."
                ),
                subject=subject,
            )
        elif row["knee_load"] is not None:
            yield Recommendation(
                priority="low",
                rule_id="sweep-capacity",
                category="capacity",
                title=f"{row['target']} saturates at {row['knee_load']:g} {unit} on {row['scenario']}",
                description=f"Sweep {row['sweep_id']} (no SLO given). {knee}",
                evidence=evidence,
                run_ids=run_ids,
                expected_impact="The same throughput with less latency at the knee's load.",
                subject=subject,
            )


def rule_cheaper_target(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
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
                <= limits.cheaper_cost_ratio * current["cost_per_request_usd"]
                and other["latency_p95_ms"]
                <= limits.cheaper_latency_ratio * current["latency_p95_ms"]
                and other["error_rate"] <= current["error_rate"] + limits.cheaper_error_margin
            ]
            if not options:
                continue
            best = min(options, key=lambda o: (o["cost_per_request_usd"], o["target"]))
            saving = 1 - best["cost_per_request_usd"] / current["cost_per_request_usd"]
            yield Recommendation(
                priority="medium",
                rule_id="cheaper-target",
                category="cost",
                title=f"{best['target']} costs {saving:.0%} less than {current['target']} on {scenario}",
                description=(
                    f"{best['target']}: ${best['cost_per_request_usd']:.6f}/request, p95 "
                    f"{best['latency_p95_ms']:.0f} ms, errors {best['error_rate']:.1%}; "
                    f"{current['target']}: ${current['cost_per_request_usd']:.6f}/request, p95 "
                    f"{current['latency_p95_ms']:.0f} ms, errors {current['error_rate']:.1%}."
                ),
                evidence={
                    "current": {
                        k: current[k]
                        for k in ("target", "cost_per_request_usd", "latency_p95_ms", "error_rate")
                    },
                    "alternative": {
                        k: best[k]
                        for k in ("target", "cost_per_request_usd", "latency_p95_ms", "error_rate")
                    },
                },
                run_ids=(current["run_id"], best["run_id"]),
                expected_impact=f"{saving:.0%} lower cost per request at similar latency and reliability.",
                subject=_subject(current),
            )


def _latest_per_target(latest: pl.DataFrame) -> pl.DataFrame:
    """The latest result of each (scenario, target), whatever its concurrency."""
    return (
        latest.sort(["timestamp", "run_id"])
        .group_by(["scenario", "target"], maintain_order=True)
        .last()
        .sort(["scenario", "target"])
    )


def rule_slo_missed(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """A target's latest run misses its SLO: at least `min_events` misses, and their share
    significantly above what the SLO allows (1 − attainment). Names the threshold that broke
    first (the lowest attainment alone) and a target that meets the same SLO, if one does."""
    # A sweep's steps past its capacity miss the SLO by design: sweep-capacity speaks for them.
    judged = _latest_per_target(latest.filter(pl.col("sweep_id").is_null())).filter(
        pl.col("slo").is_not_null() & (pl.col("operations") > 0)
    )
    rows = judged.to_dicts()
    for row in rows:
        misses = row["operations"] - row["slo_good"]
        allowed = 1.0 - row["slo_attainment_target"]
        found = share_evidence(misses, row["operations"], allowed, limits)
        if row["slo_met"] or not found.enough:
            continue
        alone = {
            name: row[f"slo_{name}_attainment"]
            for name in ("ttft", "tpot", "latency")
            if row[f"slo_{name}_attainment"] is not None
        }
        worst = min(alone, key=lambda name: (alone[name], name))
        better = sorted(
            (
                other
                for other in rows
                if other["scenario"] == row["scenario"]
                and other["target"] != row["target"]
                and other["slo_met"]
                and (other["slo"], other["slo_attainment_target"])
                == (row["slo"], row["slo_attainment_target"])
            ),
            key=lambda o: (-o["slo_attainment"], -(o["goodput_rps"] or 0.0), o["target"]),
        )
        attained, needed = (
            attainment_text(row["slo_attainment"]),
            attainment_text(row["slo_attainment_target"]),
        )
        description = (
            f"{misses} of {row['operations']} attempts missed {row['slo']} ({attained} within "
            f"it, {needed} needed): the share missed is {found.sentence()}. The threshold "
            f"that breaks first is {worst} ({attainment_text(alone[worst])} of attempts within "
            f"it alone)."
        )
        if better:
            best = better[0]
            description += (
                f" {best['target']} meets the SLO at {attainment_text(best['slo_attainment'])}"
                f" attainment, {row['target']} at {attained}."
            )
            impact = f"{best['target']}: {attainment_text(best['slo_attainment'])} within the SLO."
        else:
            description += " Lower the load (concurrency or rate), or relax the SLO."
            impact = f"Up to {needed} of attempts within the SLO."
        yield Recommendation(
            priority="high",
            rule_id="slo-missed",
            category="slo",
            title=f"{row['target']} misses the SLO on {row['scenario']}: {attained} within "
            f"{row['slo']}, {needed} needed",
            description=description,
            evidence={
                "slo": row["slo"],
                "attainment": _r(row["slo_attainment"], 4),
                "attainment_target": row["slo_attainment_target"],
                "per_threshold": {k: _r(v, 4) for k, v in alone.items()},
                "goodput_rps": _r(row["goodput_rps"], 4),
                "misses": misses,
                "attempts": row["operations"],
                "alternative": None
                if not better
                else {
                    "target": better[0]["target"],
                    "attainment": _r(better[0]["slo_attainment"], 4),
                    "goodput_rps": _r(better[0]["goodput_rps"], 4),
                },
                "test": found.test(),
            },
            run_ids=(row["run_id"], *((better[0]["run_id"],) if better else ())),
            expected_impact=impact,
            subject=_subject(row),
        )


def _per_request_at_least(column: str, minimum: float) -> pl.Expr:
    """Results with successful requests whose `column` per successful request is at least
    `minimum` (the token rules only speak of answers or prompts long enough to matter)."""
    return (pl.col("successful") > 0) & (pl.col(column) / pl.col("successful") >= minimum)


def rule_streaming(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """Unstreamed answers: the user waits for the whole response before the first token."""
    unstreamed = latest.filter(
        _per_request_at_least("output_tokens", limits.streaming_min_output_tokens)
        & (
            pl.col("ttft_p50_ms").is_null()
            | (pl.col("ttft_p50_ms") >= limits.streaming_ttft_ratio * pl.col("latency_p50_ms"))
        )
    )
    for row in unstreamed.iter_rows(named=True):
        tpot = row["tpot_mean_ms"]
        yield Recommendation(
            priority="low",
            rule_id="enable-streaming",
            category="latency",
            title=f"Stream {row['target']}'s answers on {row['scenario']}",
            description=(
                f"The first token arrives with the last (TTFT p50 {row['ttft_p50_ms'] or row['latency_p50_ms']:.0f} ms "
                f"≈ latency p50 {row['latency_p50_ms']:.0f} ms). Streaming shows text as it is generated."
            ),
            evidence={
                "ttft_p50_ms": _r(row["ttft_p50_ms"]),
                "latency_p50_ms": _r(row["latency_p50_ms"]),
                "tpot_mean_ms": _r(tpot),
            },
            run_ids=(row["run_id"],),
            expected_impact="Time to first token drops from the whole answer to the prefill time.",
            subject=_subject(row),
        )


def rule_prompt_caching(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """Long prompts sent again and again, hardly cached: paying full price for a repeated prefix."""
    cacheable = latest.filter(
        _per_request_at_least("input_tokens", limits.caching_min_input_tokens)
        & (pl.col("cached_tokens") <= limits.caching_max_cached_share * pl.col("input_tokens"))
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
            priority="low",
            rule_id="prompt-caching",
            category="cost",
            title=f"Cache the repeated prompt prefix of {row['scenario']} on {row['target']}",
            description=(
                f"Requests carry {mean_input:.0f} input tokens on average and "
                f"{row['cached_tokens']} of {row['input_tokens']} were served from cache. Put the "
                "stable part (system prompt, documents) first and enable the provider's prompt caching."
            ),
            evidence={
                "mean_input_tokens": _r(mean_input, 1),
                "cached_tokens": row["cached_tokens"],
                "max_saving_usd": _r(saving, 6),
            },
            run_ids=(row["run_id"],),
            expected_impact=(
                "Lower input cost and TTFT on cache hits"
                + (f" (at most ${saving:.4f} on this run)." if saving is not None else ".")
            ),
            subject=_subject(row),
        )


def rule_client_memory(
    results: pl.DataFrame, latest: pl.DataFrame, profiles: pl.DataFrame, limits: RecommendSettings
) -> Iterator[Recommendation]:
    """A client near its memory limit measures itself (GC pauses, swapping), not the target."""
    for row in latest.filter(pl.col("peak_memory_bytes") >= limits.client_memory_bytes).iter_rows(
        named=True
    ):
        gib = row["peak_memory_bytes"] / (1 << 30)
        yield Recommendation(
            priority="low",
            rule_id="client-memory",
            category="client",
            title=f"The benchmark client used {gib:.1f} GiB on {row['scenario']} against {row['target']}",
            description=(
                "A client near its memory limit distorts timings (GC pauses, swapping). Lower the "
                "concurrency, shorten max_tokens, or spread the load over worker processes."
            ),
            evidence={
                "peak_memory_bytes": row["peak_memory_bytes"],
                "concurrency": row["concurrency"],
            },
            run_ids=(row["run_id"],),
            expected_impact="Trustworthy timings at the same load.",
            subject=_subject(row),
        )


RULES: tuple[Rule, ...] = (
    rule_degrading_trend,
    rule_slo_missed,
    rule_rate_limited,
    rule_error_rate,
    rule_tail_latency,
    rule_saturation_knee,
    rule_sweep_capacity,
    rule_cheaper_target,
    rule_streaming,
    rule_prompt_caching,
    rule_client_memory,
)
