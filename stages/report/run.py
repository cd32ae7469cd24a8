"""`pipeline report`'s library entry: load the outputs, build the page, write it atomically.

Thin on purpose: reading is `data`, drawing is `charts`, assembling is `html`; this module only
wires them and publishes the file so a reader (a browser, a web server, a CI artefact upload) never
sees half a page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.store.location import Location
from pipeline.store.staging import replace_atomic, staged_file
from schemas import TrendSettings
from stages.profile.trends import DEFAULT_TRENDS
from stages.report.charts import build_charts
from stages.report.data import Missing, ReportData, load_report_data
from stages.report.html import Page, render_page

__all__ = ["ReportWritten", "build_page", "write_report"]


@dataclass(frozen=True)
class ReportWritten:
    """Where the page went, which sections had data, and which inputs were missing."""

    path: Path
    sections: tuple[str, ...]
    missing: tuple[Missing, ...]


def build_page(data: ReportData, trends: TrendSettings = DEFAULT_TRENDS) -> Page:
    """The page for already-loaded data (pure: equal data gives byte-identical HTML)."""
    return render_page(data, build_charts(data), trends)


def write_report(
    data_dir: Location,
    out: Path,
    scenarios: Sequence[str] | None = None,
    trends: TrendSettings = DEFAULT_TRENDS,
) -> ReportWritten:
    """Build the report from `data_dir` and atomically replace `out` with it; `trends` are the
    config's `[trends]`, so that what the page says of the profiles matches how they were built."""
    page = build_page(load_report_data(data_dir, scenarios), trends)
    content = page.html.encode("utf-8")

    def write(handle: BinaryIO) -> None:
        handle.write(content)

    # Staged beside the destination: the final rename must not cross file systems. The page
    # goes where the user said, so the folder it names is the root (followed if a link).
    out = out.absolute()
    with staged_file(out.parent, out.parent, write) as tmp:
        replace_atomic(tmp, out)
    return ReportWritten(out, page.sections, page.missing)
