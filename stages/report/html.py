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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import polars as pl
from jinja2 import Environment, PackageLoader, StrictUndefined, pass_eval_context
from jinja2.ext import Extension
from jinja2.lexer import TOKEN_DATA, Token, TokenStream
from jinja2.nodes import EvalContext
from markupsafe import Markup

from pipeline.text import counted
from schemas import TrendSettings
from stages.aggregate.status import status_text
from stages.profile.display import confidence_text
from stages.profile.trends import DEFAULT_TRENDS, min_runs_for_direction
from stages.report.charts import TREND_PANELS, Chart, Charts
from stages.report.data import INPUTS, Missing, ReportData, latest_per_target
from stages.report.text import (
    DASH,
    ms,
    number,
    percent,
    trend_words,
    usd,
)

__all__ = ["SECTIONS", "Page", "render_page"]

SECTIONS = (
    ("summary", "Summary"),
    ("latency", "Latency percentiles"),
    ("distributions", "TTFT and ITL distributions"),
    ("timeseries", "Throughput and errors over time"),
    ("trends", "Trends across runs"),
    ("sweeps", "Sweeps: load, latency and goodput"),
    ("recommendations", "Recommendations"),
)
"""(anchor id, heading) of every section, in page order."""

_WHAT_BUILDS = {
    "requests": "request events for the latest runs",
    "profiles": "profiles/performance_profiles.parquet (trend directions and change points)",
    "recommendations": "recommendations/recommendations.parquet",
}
_NEEDS = {
    "distributions": "requests",
    "timeseries": "requests",
    "trends": "profiles",
    "recommendations": "recommendations",
}
"""The optional input (`data.INPUTS`) each section is drawn from."""
assert set(_WHAT_BUILDS) == set(_NEEDS.values()) == set(INPUTS)
_NO_COLOR = "#999999"

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


Pieces = tuple[tuple[str, bool], ...]
"""A text cut so that each run id in it is a piece of its own (True): kept on one line."""


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
    """A metric's direction and, beside it, its change point (None: none was found)."""

    tag: str
    label: str
    change: str | None
    step: str | None
    step_tag: str
    step_run_id: str | None


@dataclass(frozen=True)
class _TrendRow:
    scenario: object
    target: object
    color: str
    runs: object
    cells: tuple[_TrendCell, ...]
    regression: bool
    regression_reasons: Pieces


@dataclass(frozen=True)
class _Recommendation:
    level: str
    """The priority as a style class: high, medium or low."""
    priority: object
    title: object
    category: object
    rule_id: object
    about: tuple[tuple[str, object], ...]
    description: Pieces
    expected_impact: object
    evidence: tuple[tuple[str, str], ...]
    runs: tuple[str, ...]


def _usd(value: float | None) -> str:
    return DASH if value is None else usd(value)


def _num(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def _when(value: datetime | None) -> str:
    return DASH if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _note(missing: Missing) -> _Note:
    # No absolute path in the page: the same data elsewhere must give the same bytes.
    return _Note(missing.command, _WHAT_BUILDS[missing.input])


def _pieces(text: object, run_ids: Iterable[object]) -> Pieces:
    """`text` with each of `run_ids` in it cut out as a piece of its own (longest first)."""
    if text is None:
        return ()
    value = str(text)
    ids = sorted({str(r) for r in run_ids if r}, key=lambda r: (-len(r), r))
    if not ids:
        return ((value, False),)
    pieces: list[tuple[str, bool]] = []
    at = 0
    for found in re.finditer("|".join(map(re.escape, ids)), value):
        if found.start() > at:
            pieces.append((value[at : found.start()], False))
        pieces.append((found.group(), True))
        at = found.end()
    if at < len(value):
        pieces.append((value[at:], False))
    return tuple(pieces)


def _figure(chart: Chart) -> _Figure:
    # The one trusted input, so the one place markup is let through: the SVG is written by our
    # charts module through matplotlib, which escapes every text it draws (titles and legends
    # carry scenario and target names) and writes no script; the page needs it as markup.
    return _Figure(chart.id, chart.title, Markup(chart.svg))


def _charted(
    section: str, charts: Sequence[Chart], missing: dict[str, Missing], more: bool = False
) -> _Charted:
    """A section of charts (`more`: it also shows something else, the trend table)."""
    note = missing.get(_NEEDS.get(section, ""))
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
                status=None
                if status in (None, "completed")
                else status_text(status, r.get("shards"), r.get("missing_shards")),
                started=_when(r["timestamp"]),
                requests=_num(r["operations"], 0),
                p50=ms(r["latency_p50_ms"]),
                p95=ms(r["latency_p95_ms"]),
                ttft_p50=ms(r["ttft_p50_ms"]),
                throughput=_num(r["throughput_rps"]),
                error_rate=percent(r["error_rate"]),
                cost=("~" if r.get("tokens_estimated") else "") + _usd(r["cost_per_request_usd"]),
            )
        )
    return rows


def _trend_cell(row: dict[str, Any], metric: str, threshold: float) -> _TrendCell:
    said = trend_words(row, metric, threshold)
    return _TrendCell(
        _TREND_TAG.get(said.direction, "neutral"),
        said.label,
        said.change,
        said.step,
        _TREND_TAG.get(said.step_direction or "", "neutral"),
        said.step_run_id,
    )


def _trends(profiles: pl.DataFrame, colors: dict[str, str], threshold: float) -> list[_TrendRow]:
    rows = profiles.sort(["scenario", "target", "provider", "model"])
    return [
        _TrendRow(
            scenario=r["scenario"],
            target=r["target"],
            color=colors.get(r["target"], _NO_COLOR),
            runs=r["data_points"],
            cells=tuple(_trend_cell(r, metric, threshold) for metric, _, _, _ in TREND_PANELS),
            regression=bool(r.get("regression")),
            regression_reasons=_pieces(
                r.get("regression_reasons"),
                (r.get(f"{metric}_change_point_run_id") for metric, *_ in TREND_PANELS),
            ),
        )
        for r in rows.iter_rows(named=True)
    ]


_UNIT_SUFFIXES = ("_ms", "_usd", "_bytes")


def _term(key: str) -> str:
    """An evidence key for people: its unit (which the value carries) dropped, words spaced."""
    for suffix in _UNIT_SUFFIXES:
        if key.endswith(suffix) and key != suffix:
            key = key.removesuffix(suffix)
            break
    return key.replace("_", " ")


def _bytes(value: float) -> str:
    for size, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(value) >= size:
            return f"{number(value / size)} {unit}"
    return f"{value:,.0f} B"


def _amount(key: str, value: float, threshold: float) -> str:
    """A number of the evidence in the unit its key names (`p95_ms`, `cost_usd`, `share`)."""
    if key.endswith("_usd"):
        return usd(value)
    if key.endswith("_ms"):
        return ms(value)
    if key.endswith("_bytes"):
        return _bytes(value)
    if key == "confidence":
        return confidence_text(value, threshold)
    if key == "p_value":  # as recommend rounded it (up); a tiny one as a bound, not 1e-300
        return "< 0.0001" if value < 1e-4 else f"{value:g}"
    if key.endswith("relative_change"):  # as precise as recommend stored it, not re-rounded
        return f"{(Decimal(repr(float(value))) * 100).normalize():+f}%"
    if key in ("share", "error_rate") or key.endswith("_share"):
        return percent(value)
    if key == "ratio":
        return f"{number(value)}×"
    return f"{value:,}" if isinstance(value, int) else number(value)


def _value(key: str, value: object, threshold: float, shown: frozenset[str]) -> str:
    """An evidence value for people: numbers in their unit with three significant digits (never
    `2.68e-05`), nested items as `key value`, run ids already in `shown` left out."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return _amount(key, value, threshold)
    if isinstance(value, dict):
        items = [
            (k, v)
            for k, v in sorted(value.items())
            if not (str(k).endswith("run_id") and v in shown)
        ]
        nested = any(isinstance(v, dict) for _, v in items)
        sep = ": " if nested else " "
        return ("; " if nested else ", ").join(
            f"{_term(str(k))}{sep}{_value(str(k), v, threshold, shown)}" for k, v in items
        )
    if isinstance(value, list):
        return ", ".join(_value(key, v, threshold, shown) for v in value)
    return str(value)


def _evidence(
    raw: str | None, threshold: float, runs: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """(term, value) pairs; evidence that is not a JSON object is shown whole. A run id that
    the recommendation lists among its runs is not written again."""
    try:
        evidence = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return (("evidence", str(raw)),)
    if not isinstance(evidence, dict):
        return (("evidence", json.dumps(evidence, sort_keys=True)),)
    shown = frozenset(runs)
    return tuple(
        (_term(key), _value(key, evidence[key], threshold, shown))
        for key in sorted(evidence)
        if not (key.endswith("run_id") and evidence[key] in shown)
    )


def _recommendations(recs: pl.DataFrame, threshold: float) -> tuple[list[_Recommendation], str]:
    """The recommendations in priority order, and their count per priority ("2 high, 1 low")."""
    counts = {p: recs.filter(pl.col("priority") == p).height for p in _PRIORITIES}
    summary = ", ".join(f"{n} {p}" for p, n in counts.items() if n)
    order = ["priority_rank"] if "priority_rank" in recs.columns else []
    views = []
    for r in recs.sort(order, maintain_order=True).iter_rows(named=True):
        runs = tuple(r.get("evidence_run_ids") or ())
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
                description=_pieces(r["description"], runs),
                expected_impact=r["expected_impact"],
                evidence=_evidence(r.get("evidence"), threshold, runs),
                runs=runs,
            )
        )
    return views, summary


def _subtitle(results: pl.DataFrame) -> str:
    scenarios = sorted(set(results["scenario"].to_list()))
    targets = sorted(set(results["target"].to_list()))
    newest = results["timestamp"].max()
    return (
        f"{counted(results['run_id'].n_unique(), 'run')} · scenarios: {', '.join(scenarios)} · "
        f"targets: {', '.join(targets)} · "
        f"latest run started {_when(newest if isinstance(newest, datetime) else None)}"
    )


def render_page(data: ReportData, charts: Charts, trends: TrendSettings = DEFAULT_TRENDS) -> Page:
    """The whole page; sections without their input say which command builds it. `trends` are
    the settings the profiles were built with (the config's), for what the page says of them."""
    colors = charts.colors
    threshold = trends.confidence_threshold
    missing = {m.input: m for m in data.missing}
    profiles = data.profiles
    trend_rows = (
        _trends(profiles, colors, threshold) if profiles is not None and profiles.height else []
    )
    charted = {
        "latency": _charted("latency", charts.latency, missing),
        "distributions": _charted("distributions", charts.distributions, missing),
        "timeseries": _charted("timeseries", charts.timeseries, missing),
        "trends": _charted("trends", charts.trends, missing, more=bool(trend_rows)),
        "sweeps": _charted("sweeps", charts.sweeps, missing),
    }
    recommendations, counts = (
        _recommendations(data.recommendations, threshold)
        if data.recommendations is not None
        else (None, "")
    )
    titles = dict(SECTIONS)
    page = _TEMPLATES.get_template("page.html").render(
        subtitle=_subtitle(data.results),
        sections=SECTIONS,
        missing=[
            _Note(m.command, ", ".join(titles[s] for s, i in _NEEDS.items() if i == m.input))
            for m in data.missing
        ],
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
