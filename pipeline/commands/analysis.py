"""Derived stages: aggregate, profile, recommend, run, compare, report."""

from __future__ import annotations

import click

from pipeline.commands._base import Context, not_built, pass_ctx

__all__ = ["COMMANDS"]

_LOOSE = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=_LOOSE)
@pass_ctx
def aggregate(ctx: Context) -> int:
    """Replay request events into results/benchmark_results.parquet and timeseries.parquet."""
    raise not_built("aggregate", "issue 5")


@click.command(context_settings=_LOOSE)
@pass_ctx
def profile(ctx: Context) -> int:
    """Trends across runs into profiles/performance_profiles.parquet."""
    raise not_built("profile", "issue 6")


@click.command(context_settings=_LOOSE)
@pass_ctx
def recommend(ctx: Context) -> int:
    """Optimization recommendations into recommendations/ (Parquet and Markdown)."""
    raise not_built("recommend", "issue 6")


@click.command(context_settings=_LOOSE)
@pass_ctx
def run(ctx: Context) -> int:
    """execute, aggregate, profile and recommend in order (for cron)."""
    raise not_built("run", "issues 4-6")


@click.command(context_settings=_LOOSE)
@pass_ctx
def compare(ctx: Context) -> int:
    """Targets side by side for a scenario: fastest, cheapest, most reliable, overall score."""
    raise not_built("compare", "issue 6")


@click.command(context_settings=_LOOSE)
@pass_ctx
def report(ctx: Context) -> int:
    """A self-contained HTML report with charts (opens offline)."""
    raise not_built("report", "issue 6")


COMMANDS = [aggregate, profile, recommend, run, compare, report]
