"""`--slo` on `aggregate` and `run`: parsed when the command line is (a bad one stops `run`
before a request is sent), and turned into the policy `aggregate` judges results by."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from pipeline.cli.context import Context
from pipeline.config import format_validation_error
from pipeline.errors import ConfigError
from schemas import Slo, parse_slo

if TYPE_CHECKING:
    from stages.aggregate.slo import SloPolicy

__all__ = ["SLO_HELP", "slo_option", "slo_policy"]

F = TypeVar("F", bound=Callable[..., Any])
SLO_HELP = (
    "Judge every result by this SLO instead of its scenario's `slo`, e.g. "
    '"ttft=500ms,tpot=50ms,latency=10s,attainment=0.95" (any of the thresholds; '
    "attainment defaults to 0.95). Re-derived from the stored events: no request is sent."
)


def _parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Slo | None:
    if value is None:
        return None
    try:
        return parse_slo(value)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("command line", exc, ["--slo"])) from None


def slo_option(func: F, help_text: str = SLO_HELP) -> F:
    return click.option("--slo", "slo", metavar="SLO", callback=_parse, help=help_text)(func)


def slo_policy(ctx: Context, override: Slo | None) -> SloPolicy:
    """The policy for `run_aggregate`: --slo, else each scenario's in the current config, else
    the one recorded with the run (`stages.aggregate.slo.SloPolicy`)."""
    from stages.aggregate.slo import SloPolicy

    configured = {name: s.slo for name, s in ctx.config.scenarios.items()}
    return SloPolicy(override=override, configured=configured)
