"""One recommendation, and the columns of the file it becomes a row of.

Built by field name by the rules (`stages.recommend.rules`); `row()` is the one place that turns
it into the stored shape (priority rank, evidence as sorted JSON), so equal advice gives equal bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

__all__ = [
    "ORDER",
    "RECOMMENDATION_SCHEMA",
    "SUBJECT_KEYS",
    "Priority",
    "Recommendation",
]

Priority = Literal["high", "medium", "low"]
_RANK = {"high": 0, "medium": 1, "low": 2}
_S = pl.String()

SUBJECT_KEYS = ("provider", "model", "scenario", "target")
"""What a recommendation is about (each may be null)."""

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
        *((key, _S) for key in SUBJECT_KEYS),
    ]
)
"""The columns of recommendations/recommendations.parquet; `evidence` is a JSON object."""

ORDER = ("priority_rank", "rule_id", "scenario", "target", "title")
"""The rows' order in both outputs: most urgent first, then by rule, scenario, target."""


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """What a rule found, with the numbers (`evidence`) and runs it rests on. Keyword-only, so
    that nine fields of mostly strings cannot be passed in the wrong order."""

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
        """The stored row, in `RECOMMENDATION_SCHEMA`'s columns."""
        subject = {k: self.subject.get(k) for k in SUBJECT_KEYS}
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
