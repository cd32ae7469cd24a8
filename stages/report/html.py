"""The report page: loaded frames and rendered charts in, one self-contained HTML string out (pure).

Why Jinja2 templates with autoescape: the markup lives in `templates/` and every value a template
writes is escaped by the environment, so no caller escapes anything by hand and a text from the
data (a model name, a recommendation, an evidence value) can never become markup. The one trusted
input is the charts' SVG, marked safe in `_figure` and nowhere else. This module only turns the
frames into plain views (formatted strings, in page order) and renders `templates/page.html`.

The page carries its own stylesheet and inline SVG, no script and no external URL, so it opens
offline, prints well and can be attached to an e-mail or a CI artefact as one file. Nothing from the
clock goes in: the only times shown are those of the runs, so equal inputs give byte-identical pages.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from jinja2 import Environment, PackageLoader, StrictUndefined, pass_eval_context
from jinja2.ext import Extension
from jinja2.lexer import TOKEN_DATA, Token, TokenStream
from jinja2.nodes import EvalContext
from markupsafe import Markup

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
_NO_COLOR = "#999999"

_ARROWS = {"improving": "▲ improving", "degrading": "▼ degrading", "stable": "● stable"}
_TREND_HEADERS = {
    "latency": "Mean latency",
    "throughput": "Throughput",
    "error_rate": "Error rate",
    "cost_efficiency": "Cost efficiency",
}
_TREND_TAG = {"improving": "low", "degrading": "high", "stable": "neutral"}
_PRIORITIES = ("high", "medium", "low")

# -- the template environment -------------------------------------------------------------------

_SOURCE_LAYOUT = re.compile(r"\n[ \t]*")


class _SourceLayout(Extension):
    """Drops each line break of an `.html` template's own text, with the indentation after it.

    Why: the page has always been written without line breaks between its elements (its bytes must
    not change with the move to templates), and the templates should still read as indented
    HTML. Only the template's literal text is touched, never a value, so whatever the data says
    is written as it is (escaped); `{{ "\\n" }}` writes a real line break, and other templates
    (the stylesheet) are kept verbatim.
    """

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        layout = (stream.name or "").endswith(".html")
        for token in stream:
            if layout and token.type == TOKEN_DATA:
                token = Token(token.lineno, TOKEN_DATA, _SOURCE_LAYOUT.sub("", token.value))
            yield token


@pass_eval_context
def _escaped(eval_ctx: EvalContext, value: object) -> object:
    """Every value a template writes: None as nothing, escaped as `html.escape` spells it.

    Why not markupsafe's spelling: both escape the same five characters (& < > " '), but
    markupsafe writes quotes as `&#34;` and `&#39;` where this page has always had `&quot;` and
    `&#x27;`, and equal data must keep giving the same bytes. Markup (a macro's output, a chart)
    is written as it is, and with autoescape off nothing is escaped here either, so the
    environment's `autoescape` stays the one switch.
    """
    if value is None:
        return ""
    if not eval_ctx.autoescape or hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


_TEMPLATES = Environment(
    loader=PackageLoader("stages.report", "templates"),
    autoescape=True,
    finalize=_escaped,
    undefined=StrictUndefined,  # a misspelt name in a template fails instead of writing nothing
    extensions=[_SourceLayout],
    keep_trailing_newline=True,  # the stylesheet ends with its line break
    auto_reload=False,
)

# -- the views the templates draw -----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """The finished page and the ids of the sections that had data to show."""

    html: str
    sections: tuple[str, ...]
    missing: tuple[Missing, ...]


@dataclass(frozen=True)
class _Note:
    """A missing input: the command that builds it and what it is for."""

    command: str
    what: str


@dataclass(frozen=True)
class _Figure:
    id: str
    title: str
    svg: Markup


@dataclass(frozen=True)
class _Charted:
    """A section of charts: the note on its missing input, whether it has data, its figures."""

    missing: _Note | None
    shown: bool
    figures: tuple[_Figure, ...]


@dataclass(frozen=True)
class _SummaryRow:
    scenario: object
    target: object
    color: str
    provider: object
    model: object
    run_id: object
    status: object
    """The run's status when it did not complete, else None."""
    started: str
    requests: str
    p50: str
    p95: str
    ttft_p50: str
    throughput: str
    error_rate: str
    cost: str


@dataclass(frozen=True)
class _TrendCell:
    tag: str
    label: str
    change: str | None
    step: str | None
    """The change point's step (" +12%", or "" when its size is unknown); None: no change point."""
    step_run_id: object


@dataclass(frozen=True)
class _TrendRow:
    scenario: object
    target: object
    color: str
    runs: object
    cells: tuple[_TrendCell, ...]
    regression: bool
    regression_reasons: object


@dataclass(frozen=True)
class _Recommendation:
    level: str
    """The priority as a style class: high, medium or low."""
    priority: object
    title: object
    category: object
    rule_id: object
    about: tuple[tuple[str, object], ...]
    description: object
    expected_impact: object
    evidence: tuple[tuple[str, str], ...]
    runs: str | None


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


def _note(missing: Missing) -> _Note:
    # No absolute path in the page: the same data elsewhere must give the same bytes.
    return _Note(missing.command, _WHAT_BUILDS.get(missing.section, missing.section))


def _figure(chart: Chart) -> _Figure:
    # The one trusted input, so the one place markup is let through: the SVG is written by our
    # charts module through matplotlib, which escapes every text it draws (titles and legends
    # carry scenario and target names) and writes no script; the page needs it as markup.
    return _Figure(chart.id, chart.title, Markup(chart.svg))


def _charted(
    section: str, charts: Sequence[Chart], missing: dict[str, Missing], more: bool = False
) -> _Charted:
    """A section of charts (`more`: it also shows something else, the trend table)."""
    note = missing.get(section)
    figures = tuple(_figure(chart) for chart in charts)
    return _Charted(_note(note) if note else None, bool(figures) or more, figures)


def _summary(latest: pl.DataFrame, colors: dict[str, str]) -> list[_SummaryRow]:
    rows = []
    for r in latest.iter_rows(named=True):
        status = r.get("run_status")
        rows.append(
            _SummaryRow(
                scenario=r["scenario"],
                target=r["target"],
                color=colors.get(r["target"], _NO_COLOR),
                provider=r["provider"],
                model=r["model"],
                run_id=r["run_id"],
                status=None if status in (None, "completed") else status,
                started=_when(r["timestamp"]),
                requests=_num(r["operations"], 0),
                p50=_ms(r["latency_p50_ms"]),
                p95=_ms(r["latency_p95_ms"]),
                ttft_p50=_ms(r["ttft_p50_ms"]),
                throughput=_num(r["throughput_rps"]),
                error_rate=_pct(r["error_rate"]),
                cost=("~" if r.get("tokens_estimated") else "") + _usd(r["cost_per_request_usd"]),
            )
        )
    return rows


def _trend_cell(row: dict[str, Any], metric: str) -> _TrendCell:
    direction = row.get(f"{metric}_trend") or "insufficient_data"
    change = row.get(f"{metric}_relative_change")
    confidence = row.get(f"{metric}_confidence")
    shown_change = None
    if direction != "insufficient_data" and change is not None:
        shown_change = f"{change * 100:+.1f}%, confidence {confidence or 0:.2f}"
    step = step_run_id = None
    if row.get(f"{metric}_change_point_run_id"):
        size = row.get(f"{metric}_change_point_relative_change")
        step = f" {size * 100:+.0f}%" if size is not None else ""
        step_run_id = row[f"{metric}_change_point_run_id"]
    return _TrendCell(
        _TREND_TAG.get(direction, "neutral"),
        _ARROWS.get(direction, "too few runs"),
        shown_change,
        step,
        step_run_id,
    )


def _trends(profiles: pl.DataFrame, colors: dict[str, str]) -> list[_TrendRow]:
    return [
        _TrendRow(
            scenario=r["scenario"],
            target=r["target"],
            color=colors.get(r["target"], _NO_COLOR),
            runs=r["data_points"],
            cells=tuple(_trend_cell(r, metric) for metric, _, _, _ in TREND_PANELS),
            regression=bool(r.get("regression")),
            regression_reasons=r.get("regression_reasons"),
        )
        for r in profiles.sort(["scenario", "target", "provider", "model"]).iter_rows(named=True)
    ]


def _value(value: object) -> str:
    """An evidence value for people: floats to 4 significant digits, nested items as `k: v`."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')}: {_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _evidence(raw: str | None) -> tuple[tuple[str, str], ...]:
    """(term, value) pairs; evidence that is not a JSON object is shown whole."""
    try:
        evidence = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return (("evidence", str(raw)),)
    if not isinstance(evidence, dict):
        return (("evidence", json.dumps(evidence, sort_keys=True)),)
    return tuple((key.replace("_", " "), _value(evidence[key])) for key in sorted(evidence))


def _recommendations(recs: pl.DataFrame) -> tuple[list[_Recommendation], str]:
    """The recommendations in priority order, and their count per priority ("2 high, 1 low")."""
    counts = {p: recs.filter(pl.col("priority") == p).height for p in _PRIORITIES}
    summary = ", ".join(f"{n} {p}" for p, n in counts.items() if n)
    order = ["priority_rank"] if "priority_rank" in recs.columns else []
    views = []
    for r in recs.sort(order, maintain_order=True).iter_rows(named=True):
        runs = r.get("evidence_run_ids") or []
        views.append(
            _Recommendation(
                level=r["priority"] if r["priority"] in _PRIORITIES else "low",
                priority=r["priority"],
                title=r["title"],
                category=r["category"],
                rule_id=r["rule_id"],
                about=tuple(
                    (k, r[k]) for k in ("scenario", "target", "model") if r.get(k) is not None
                ),
                description=r["description"],
                expected_impact=r["expected_impact"],
                evidence=_evidence(r.get("evidence")),
                runs=", ".join(runs) if runs else None,
            )
        )
    return views, summary


def _subtitle(results: pl.DataFrame) -> str:
    scenarios = sorted(set(results["scenario"].to_list()))
    targets = sorted(set(results["target"].to_list()))
    newest = results["timestamp"].max()
    return (
        f"{results['run_id'].n_unique()} run(s) · scenarios: {', '.join(scenarios)} · "
        f"targets: {', '.join(targets)} · "
        f"latest run started {_when(newest if isinstance(newest, datetime) else None)}"
    )


def render_page(data: ReportData, charts: Charts, trends: TrendSettings = DEFAULT_TRENDS) -> Page:
    """The whole page; sections without their input say which command builds it. `trends` are
    the settings the profiles were built with (the config's), for what the page says of them."""
    colors = charts.colors
    missing = {m.section: m for m in data.missing}
    profiles = data.profiles
    trend_rows = _trends(profiles, colors) if profiles is not None and profiles.height else []
    charted = {
        "latency": _charted("latency", charts.latency, missing),
        "distributions": _charted("distributions", charts.distributions, missing),
        "timeseries": _charted("timeseries", charts.timeseries, missing),
        "trends": _charted("trends", charts.trends, missing, more=bool(trend_rows)),
    }
    recommendations, counts = (
        _recommendations(data.recommendations) if data.recommendations is not None else (None, "")
    )
    titles = dict(SECTIONS)
    page = _TEMPLATES.get_template("page.html").render(
        subtitle=_subtitle(data.results),
        sections=SECTIONS,
        missing=[_Note(m.command, titles.get(m.section, m.section)) for m in data.missing],
        summary=_summary(latest_per_target(data.results), colors),
        charted_sections=charted,
        trend_headers=[_TREND_HEADERS[metric] for metric, _, _, _ in TREND_PANELS],
        trends=trend_rows,
        runs_for_direction=min_runs_for_direction(trends),
        recommendations=recommendations,
        recommendation_counts=counts,
        recommendations_missing=(
            _note(missing["recommendations"]) if recommendations is None else None
        ),
    )
    shown = {"summary", *(name for name, section in charted.items() if section.shown)}
    if recommendations is not None:
        shown.add("recommendations")
    return Page(page, tuple(a for a, _ in SECTIONS if a in shown), data.missing)
