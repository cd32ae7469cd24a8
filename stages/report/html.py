"""The report page: loaded frames and rendered charts in, one self-contained HTML string out (pure).

Why plain string assembly and no template engine: the page is small and fixed, every value goes
through `html.escape` at one place (`_e`), and no extra dependency is needed. The page carries its
own stylesheet and inline SVG, no script and no external URL, so it opens offline, prints well and
can be attached to an e-mail or a CI artefact as one file. Nothing from the clock goes in: the only
times shown are those of the runs, so equal inputs give byte-identical pages.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from schemas import TrendSettings
from stages.profile.trends import DEFAULT_TRENDS, min_runs_for_direction
from stages.report.charts import TREND_PANELS, Chart, Charts, usd
from stages.report.data import Missing, ReportData, latest_per_target

__all__ = ["SECTIONS", "Page", "render_page"]

SECTIONS = (
    ("summary", "Summary"),
    ("latency", "Latency percentiles"),
    ("distributions", "TTFT and ITL distributions"),
    ("timeseries", "Throughput and errors over time"),
    ("trends", "Trends across runs"),
    ("recommendations", "Recommendations"),
)
"""(anchor id, heading) of every section, in page order."""

_WHAT_BUILDS = {
    "timeseries": "results/timeseries.parquet (throughput and errors per second)",
    "trends": "profiles/performance_profiles.parquet (trend directions and change points)",
    "recommendations": "recommendations/recommendations.parquet",
    "distributions": "request events for the latest runs",
}

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --bg: #ffffff; --soft: #f6f8fa;
  --accent: #0072B2; --high: #c62828; --medium: #b26a00; --low: #2e7d32; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: var(--bg);
  min-height: 100vh; box-shadow: 0 0 0 1px var(--line); }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: var(--muted); }
nav { margin: 16px 0 8px; padding: 8px 0; border-top: 1px solid var(--line);
  border-bottom: 1px solid var(--line); font-size: 14px; }
nav a { margin-right: 18px; color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { margin-top: 36px; }
h2 { font-size: 20px; margin: 0 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--soft); }
h3 { font-size: 15px; margin: 20px 0 6px; color: var(--muted); font-weight: 600; }
p.lead { margin: 0 0 12px; color: var(--muted); font-size: 14px; }
figure { margin: 8px 0 20px; }
figure svg { display: block; width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0 16px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
.nowrap { white-space: nowrap; }
td small.muted { color: var(--muted); font-size: 12px; }
td code { font-size: 12px; background: none; padding: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; vertical-align: baseline; }
.tag { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px;
  font-weight: 600; line-height: 20px; white-space: nowrap; }
.tag.high { background: #fdecea; color: var(--high); }
.tag.medium { background: #fff4e0; color: var(--medium); }
.tag.low { background: #e8f5e9; color: var(--low); }
.tag.neutral { background: var(--soft); color: var(--muted); }
.missing { border-left: 4px solid var(--medium); background: #fff8eb; padding: 10px 14px;
  margin: 10px 0; font-size: 14px; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: var(--soft); padding: 1px 5px; border-radius: 4px; }
.rec { border: 1px solid var(--line); border-left-width: 5px; border-radius: 6px;
  padding: 12px 16px; margin: 12px 0; }
.rec.high { border-left-color: var(--high); }
.rec.medium { border-left-color: var(--medium); }
.rec.low { border-left-color: var(--low); }
.rec h4 { margin: 0 0 4px; font-size: 16px; }
.rec .about { color: var(--muted); font-size: 13px; margin-bottom: 6px; }
.rec p { margin: 6px 0; }
.rec dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0 0;
  font-size: 13px; }
.rec dt { color: var(--muted); }
.rec dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
@media print { body { background: #fff; } main { box-shadow: none; } figure { break-inside: avoid; } }
"""


@dataclass(frozen=True)
class Page:
    """The finished page and the ids of the sections that had data to show."""

    html: str
    sections: tuple[str, ...]
    missing: tuple[Missing, ...]


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _usd(value: float | None) -> str:
    return "–" if value is None else usd(value)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]]) -> str:
    """A table from pre-escaped cells; a header's flag right-aligns its (numeric) column."""
    head = "".join(f"<th{' class=num' if num else ''}>{_e(h)}</th>" for h, num in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if num else ''}>{cell}</td>"
            for cell, (_, num) in zip(row, headers, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(target: str, colors: dict[str, str]) -> str:
    color = colors.get(target, "#999999")
    swatch = f'<span class="swatch" style="background:{_e(color)}"></span>'
    return f'<span class="nowrap">{swatch}{_e(target)}</span>'


def _missing_note(missing: Missing) -> str:
    # No absolute path in the page: the same data elsewhere must give the same bytes.
    what = _WHAT_BUILDS.get(missing.section, missing.section)
    return (
        f'<div class="missing">Not built yet: run <code>{_e(missing.command)}</code> to build '
        f"{_e(what)}.</div>"
    )


def _figures(charts: Sequence[Chart]) -> str:
    return "".join(
        f'<figure id="{_e(c.id)}"><h3>{_e(c.title)}</h3>{c.svg}</figure>' for c in charts
    )


def _summary(latest: pl.DataFrame, colors: dict[str, str]) -> str:
    headers = [
        ("Scenario", False),
        ("Target", False),
        ("Latest run", False),
        ("Requests", True),
        ("p50", True),
        ("p95", True),
        ("TTFT p50", True),
        ("Throughput", True),
        ("Error rate", True),
        ("Cost / request", True),
    ]
    rows = []
    for r in latest.iter_rows(named=True):
        status = r.get("run_status")
        run = f"<code>{_e(r['run_id'])}</code>"
        if status not in (None, "completed"):
            run += f' <span class="tag medium">{_e(status)}</span>'
        rows.append(
            [
                _e(r["scenario"]),
                _swatch(r["target"], colors)
                + f'<br><small class="muted">{_e(r["provider"])} / {_e(r["model"])}</small>',
                f'{run}<br><small class="muted">{_e(_when(r["timestamp"]))}</small>',
                _e(_num(r["operations"], 0)),
                _e(_ms(r["latency_p50_ms"])),
                _e(_ms(r["latency_p95_ms"])),
                _e(_ms(r["ttft_p50_ms"])),
                _e(f"{_num(r['throughput_rps'])} req/s"),
                _e(_pct(r["error_rate"])),
                _e(("~" if r.get("tokens_estimated") else "") + _usd(r["cost_per_request_usd"])),
            ]
        )
    return (
        '<p class="lead">The latest run of each target per scenario. Latency and TTFT over '
        "successful requests; error rate over all attempts (warmup excluded). A cost marked "
        "~ rests on token counts the client estimated (the server reported no usage).</p>"
        + _table(headers, rows)
    )


_ARROWS = {"improving": "▲ improving", "degrading": "▼ degrading", "stable": "● stable"}
_TREND_HEADERS = {
    "latency": "Mean latency",
    "throughput": "Throughput",
    "error_rate": "Error rate",
    "cost_efficiency": "Cost efficiency",
}
_TREND_TAG = {"improving": "low", "degrading": "high", "stable": "neutral"}


def _trend_cell(row: dict[str, Any], metric: str) -> str:
    direction = row.get(f"{metric}_trend") or "insufficient_data"
    label = _ARROWS.get(direction, "too few runs")
    cell = f'<span class="tag {_TREND_TAG.get(direction, "neutral")}">{_e(label)}</span>'
    change = row.get(f"{metric}_relative_change")
    confidence = row.get(f"{metric}_confidence")
    if direction != "insufficient_data" and change is not None:
        cell += f"<br><small>{change * 100:+.1f}%, confidence {confidence or 0:.2f}</small>"
    if row.get(f"{metric}_change_point_run_id"):
        step = row.get(f"{metric}_change_point_relative_change")
        step_text = f" {step * 100:+.0f}%" if step is not None else ""
        cell += (
            f"<br><small>step{_e(step_text)} at {_e(row[f'{metric}_change_point_run_id'])}</small>"
        )
    return cell


def _trend_table(profiles: pl.DataFrame, colors: dict[str, str], trends: TrendSettings) -> str:
    headers = [("Scenario", False), ("Target", False), ("Runs", True)]
    headers += [(_TREND_HEADERS[metric], False) for metric, _, _, _ in TREND_PANELS]
    headers += [("Regression", False)]
    rows = []
    for r in profiles.sort(["scenario", "target", "provider", "model"]).iter_rows(named=True):
        flag = (
            f'<span class="tag high">yes</span><br><small>{_e(r.get("regression_reasons"))}</small>'
            if r.get("regression")
            else '<span class="tag neutral">no</span>'
        )
        rows.append(
            [
                _e(r["scenario"]),
                _swatch(r["target"], colors),
                _e(r["data_points"]),
                *(_trend_cell(r, metric) for metric, _, _, _ in TREND_PANELS),
                flag,
            ]
        )
    return (
        '<p class="lead">From <code>pipeline profile</code>: one value per run, Theil-Sen size and '
        f"Mann-Kendall confidence; a direction needs at least {min_runs_for_direction(trends)} "
        "runs. Cost efficiency is "
        "output tokens per USD.</p>" + _table(headers, rows)
    )


def _value(value: object) -> str:
    """An evidence value for people: floats to 4 significant digits, nested items as `k: v`."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')}: {_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _evidence(raw: str | None) -> str:
    try:
        evidence = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return f"<dt>evidence</dt><dd>{_e(raw)}</dd>"
    if not isinstance(evidence, dict):
        return f"<dt>evidence</dt><dd>{_e(json.dumps(evidence, sort_keys=True))}</dd>"
    return "".join(
        f"<dt>{_e(key.replace('_', ' '))}</dt><dd>{_e(_value(evidence[key]))}</dd>"
        for key in sorted(evidence)
    )


def _recommendations(recs: pl.DataFrame) -> str:
    if recs.is_empty():
        return '<p class="lead">No rule fired on the latest results: nothing to recommend.</p>'
    counts = {p: recs.filter(pl.col("priority") == p).height for p in ("high", "medium", "low")}
    summary = ", ".join(f"{n} {p}" for p, n in counts.items() if n)
    parts = [f'<p class="lead">{recs.height} recommendation(s): {_e(summary)}.</p>']
    order = ["priority_rank"] if "priority_rank" in recs.columns else []
    for r in recs.sort(order, maintain_order=True).iter_rows(named=True):
        priority = r["priority"] if r["priority"] in counts else "low"
        about = " · ".join(
            f"{k} {_e(r[k])}" for k in ("scenario", "target", "model") if r.get(k) is not None
        )
        runs = r.get("evidence_run_ids") or []
        run_text = f"<dt>runs</dt><dd><code>{_e(', '.join(runs))}</code></dd>" if runs else ""
        parts.append(
            f'<article class="rec {priority}">'
            f'<h4><span class="tag {priority}">{_e(r["priority"])}</span> {_e(r["title"])}</h4>'
            f'<div class="about">{_e(r["category"])} · {_e(r["rule_id"])}'
            f"{' · ' + about if about else ''}</div>"
            f"<p>{_e(r['description'])}</p>"
            f"<p><strong>Expected impact:</strong> {_e(r['expected_impact'])}</p>"
            f"<dl>{_evidence(r.get('evidence'))}{run_text}</dl></article>"
        )
    return "".join(parts)


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def render_page(data: ReportData, charts: Charts, trends: TrendSettings = DEFAULT_TRENDS) -> Page:
    """The whole page; sections without their input say which command builds it. `trends` are
    the settings the profiles were built with (the config's), for what the page says of them."""
    colors = charts.colors
    latest = latest_per_target(data.results)
    missing = {m.section: m for m in data.missing}
    shown: list[str] = ["summary"]
    bodies = {"summary": _summary(latest, colors)}

    def charted(section: str, items: Sequence[Chart], lead: str, extra: str = "") -> None:
        if section in missing:
            bodies[section] = _missing_note(missing[section]) + _figures(items) + extra
        elif items or extra:
            bodies[section] = f'<p class="lead">{lead}</p>' + _figures(items) + extra
        else:
            bodies[section] = '<p class="lead">No data for this section.</p>'
        if items or extra:
            shown.append(section)

    charted(
        "latency",
        charts.latency,
        "End-to-end latency (request sent to last byte) of each target's latest run; "
        "linear-interpolation percentiles over successful requests.",
    )
    charted(
        "distributions",
        charts.distributions,
        "Share of requests (or of chunk gaps) at or below a value, for each target's latest run. "
        "Further left is faster; a long flat top is a slow tail.",
    )
    charted(
        "timeseries",
        charts.timeseries,
        "Requests completed and attempts failed per second over each target's latest run.",
    )
    profiles = data.profiles
    table = (
        _trend_table(profiles, colors, trends) if profiles is not None and profiles.height else ""
    )
    charted(
        "trends",
        charts.trends,
        "One point per run, by its start time; dashed lines mark change points found by "
        "<code>pipeline profile</code>.",
        table,
    )
    if data.recommendations is not None:
        bodies["recommendations"] = _recommendations(data.recommendations)
        shown.append("recommendations")
    else:
        bodies["recommendations"] = _missing_note(missing["recommendations"])

    results = data.results
    scenarios = sorted(set(results["scenario"].to_list()))
    targets = sorted(set(results["target"].to_list()))
    runs = results["run_id"].n_unique()
    newest = results["timestamp"].max()
    subtitle = (
        f"{runs} run(s) · scenarios: {', '.join(scenarios)} · targets: {', '.join(targets)} · "
        f"latest run started {_when(newest if isinstance(newest, datetime) else None)}"
    )
    notes = ""
    if data.missing:
        items = ", ".join(
            f"<code>{_e(m.command)}</code> ({_e(dict(SECTIONS).get(m.section, m.section))})"
            for m in data.missing
        )
        notes = f'<div class="missing">Part of this report is not built yet; run {items}.</div>'

    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in SECTIONS)
    body = "".join(_section(a, t, bodies[a]) for a, t in SECTIONS)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>LLM benchmark report</title>"
        f"<style>{_CSS}</style></head><body><main>"
        f"<header><h1>LLM benchmark report</h1><p>{_e(subtitle)}</p></header>"
        f"<nav>{nav}</nav>{notes}{body}"
        "<footer>Built by <code>pipeline report</code> from the Parquet outputs and the request "
        "events in the data directory; rebuilt from the same data, this page is byte-identical."
        "</footer></main></body></html>\n"
    )
    return Page(page, tuple(a for a, _ in SECTIONS if a in shown), data.missing)
