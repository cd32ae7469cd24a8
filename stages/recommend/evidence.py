"""When a share of attempts is evidence enough to be worth a person's attention.

One 429 in 5 attempts is a share of 20%, but it says almost nothing about the true rate: a
target that is rate limited 1% of the time gives that as often as one run in twenty. So a rule
that fires on a share (rate-limited, error-rate) needs both

- a minimum count of the events it counts (`[recommend] min_events`), and
- a one-sided exact binomial test that the true share is above the rule's threshold: with k
  events in n attempts, p = P(X ≥ k) for X ~ Binomial(n, threshold), and the rule fires when
  p ≤ `[recommend] significance`.

P(X ≥ k) is the regularized incomplete beta function I_threshold(k, n − k + 1), which the
project already has (`stages.profile.stats.special`), so no scipy is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import RecommendSettings
from stages.profile.display import p_value_shown, p_value_text
from stages.profile.stats.special import regularized_incomplete_beta

__all__ = ["ShareEvidence", "binomial_sf", "share_evidence"]

TEST_NAME = "one-sided exact binomial"


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p): how often `k` or more of `n` attempts would be events
    if each were one with probability `p` (the p-value of "the true share is above p")."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if k <= 0:
        return 1.0
    if k > n or p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    return regularized_incomplete_beta(float(k), float(n - k + 1), p)


@dataclass(frozen=True)
class ShareEvidence:
    """k events in n attempts against a threshold share, and whether that is enough to act on."""

    events: int
    attempts: int
    threshold: float
    p_value: float
    min_events: int
    significance: float

    @property
    def share(self) -> float:
        return self.events / self.attempts if self.attempts else 0.0

    @property
    def enough(self) -> bool:
        """At least `min_events` events, and the share significantly above the threshold."""
        return self.events >= self.min_events and self.p_value <= self.significance

    def test(self) -> dict[str, Any]:
        """The test and its numbers, for a recommendation's evidence JSON (the p-value rounded
        up, so that it never looks significant when it is not)."""
        return {
            "name": TEST_NAME,
            "null_hypothesis": f"share <= {self.threshold:g}",
            "p_value": p_value_shown(self.p_value, self.significance),
            "significance": self.significance,
            "min_events": self.min_events,
        }

    def sentence(self) -> str:
        """The test in words, for a recommendation's description."""
        p = p_value_text(self.p_value, self.significance)
        return (
            f"significantly above {self.threshold:.1%} ({TEST_NAME} test, p = {p} ≤ "
            f"{self.significance:g}; {self.events} events, {self.min_events} needed)"
        )


def share_evidence(
    events: int, attempts: int, threshold: float, limits: RecommendSettings
) -> ShareEvidence:
    """The evidence that `events` of `attempts` put the true share above `threshold`."""
    return ShareEvidence(
        events=events,
        attempts=attempts,
        threshold=threshold,
        p_value=binomial_sf(events, attempts, threshold),
        min_events=limits.min_events,
        significance=limits.significance,
    )
