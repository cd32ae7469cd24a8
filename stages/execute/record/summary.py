"""What a person sees during and after a run: running counts and a per-pair summary.

Kept from the in-memory attempts (never a replay), so the progress bar and the closing table
cost nothing extra. The numbers of record are `aggregate`'s, rebuilt from the events; these are
a preview with the same definitions (warmup excluded, percentiles over successful requests,
median = numpy's linear-interpolation p50).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from stages.execute.client.providers.base import Attempt

__all__ = ["MAX_MESSAGES", "PairResult", "PairStats", "StatsDelta"]

MAX_MESSAGES = 8
"""Distinct error messages kept per error type (each with its count): enough to say why, bounded
whatever a server sends."""


@dataclass(frozen=True, slots=True)
class StatsDelta:
    """What a worker process's `PairStats` gained since its last report (sent to the parent)."""

    finished: int
    attempts: int
    ok: int
    errors: int
    first_ns: int
    last_ns: int
    latencies_us: list[int]
    ttfts_us: list[int]
    errors_by_type: dict[str, Counter[str]] = field(default_factory=dict)
    """error type → message → attempts, since the last report (at most MAX_MESSAGES each)."""


class PairStats:
    """Running counts of one scenario × target, updated once per finished attempt (`finished`:
    measured requests done, their retries included; warmup is left out of every count)."""

    __slots__ = (
        "_reported",
        "_reported_errors",
        "attempts",
        "errors",
        "errors_by_type",
        "finished",
        "first_ns",
        "last_ns",
        "latencies_us",
        "ok",
        "ttfts_us",
    )

    def __init__(self) -> None:
        self.finished = 0
        """Requests done, warmup included (drives the progress bar)."""
        self.attempts = 0
        self.ok = 0
        self.errors = 0
        self.latencies_us: list[int] = []
        self.ttfts_us: list[int] = []
        self.first_ns = 0
        self.last_ns = 0
        self.errors_by_type: dict[str, Counter[str]] = {}
        """Measured failed attempts: error type → message → count (MAX_MESSAGES per type; an
        attempt whose message does not fit counts under "" ("other messages"))."""
        self._reported = (0, 0, 0, 0, 0, 0)
        self._reported_errors: dict[str, Counter[str]] = {}

    def delta(self) -> StatsDelta:
        """What changed since the previous call (a worker's report to its parent)."""
        finished, attempts, ok, errors, n_lat, n_ttft = self._reported
        self._reported = (
            self.finished,
            self.attempts,
            self.ok,
            self.errors,
            len(self.latencies_us),
            len(self.ttfts_us),
        )
        new_errors = {
            kind: counts - self._reported_errors.get(kind, Counter())
            for kind, counts in self.errors_by_type.items()
        }
        self._reported_errors = {k: Counter(v) for k, v in self.errors_by_type.items()}
        return StatsDelta(
            self.finished - finished,
            self.attempts - attempts,
            self.ok - ok,
            self.errors - errors,
            self.first_ns,
            self.last_ns,
            self.latencies_us[n_lat:],
            self.ttfts_us[n_ttft:],
            {kind: counts for kind, counts in new_errors.items() if counts},
        )

    def merge(self, delta: StatsDelta) -> None:
        """Add a worker's report (the parent's running totals over all workers)."""
        self.finished += delta.finished
        self.attempts += delta.attempts
        self.ok += delta.ok
        self.errors += delta.errors
        if delta.first_ns and (not self.first_ns or delta.first_ns < self.first_ns):
            self.first_ns = delta.first_ns
        self.last_ns = max(self.last_ns, delta.last_ns)
        self.latencies_us.extend(delta.latencies_us)
        self.ttfts_us.extend(delta.ttfts_us)
        for kind, counts in delta.errors_by_type.items():
            for message, n in counts.items():
                self._count_error(kind, message, n)

    def _count_error(self, kind: str, message: str, n: int = 1) -> None:
        counts = self.errors_by_type.setdefault(kind, Counter())
        if message not in counts and len(counts) >= MAX_MESSAGES:
            message = ""
        counts[message] += n

    def add(self, attempt: Attempt, warmup: bool) -> None:
        if warmup:
            return
        self.attempts += 1
        start, end = attempt.start_ns, attempt.end_ns
        if start and (not self.first_ns or start < self.first_ns):
            self.first_ns = start
        if end > self.last_ns:
            self.last_ns = end
        if attempt.ok:
            self.ok += 1
            self.latencies_us.append((end - start) // 1000)
            if attempt.chunk_ns:
                self.ttfts_us.append((attempt.chunk_ns[0] - start) // 1000)
        else:
            self.errors += 1
            self._count_error(attempt.error_type or attempt.status, attempt.error_message or "")

    @property
    def elapsed_s(self) -> float:
        return max(0.0, (self.last_ns - self.first_ns) / 1e9) if self.first_ns else 0.0

    def rate(self) -> float | None:
        elapsed = self.elapsed_s
        return self.ok / elapsed if elapsed > 0 else None

    @staticmethod
    def p50_ms(values_us: list[int]) -> float | None:
        return statistics.median(values_us) / 1000.0 if values_us else None

    def status_line(self) -> str:
        rate = self.rate()
        p50 = self.p50_ms(self.latencies_us)
        parts = [f"{rate:.1f} req/s" if rate is not None else "- req/s", f"{self.errors} err"]
        parts.append(f"p50 {p50:.0f} ms" if p50 is not None else "p50 -")
        return " · ".join(parts)


@dataclass(frozen=True)
class PairResult:
    """The closing summary of one scenario × target."""

    scenario: str
    target: str
    provider: str
    model: str
    status: str
    requests: int
    """Measured attempts (warmup excluded; each retry counts)."""
    ok: int
    errors: int
    latency_p50_ms: float | None
    ttft_p50_ms: float | None
    throughput_rps: float | None
    peak_rss_bytes: int
    """The largest RSS sampled; with worker processes, the sum of each one's largest."""
    workers: int = 1
    client_cpu_saturation: float | None = None
    client_saturated: bool | None = None
    """The client was too busy for its timings to be trusted (stages.execute.record.capacity)."""
    client_loop_lag_p95_ms: float | None = None
    """How late the client's event loop ran (p95, worst process): starvation shows here."""
    errors_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    """Measured failed attempts: error type → message (scrubbed) → count, most frequent first."""

    @classmethod
    def from_stats(
        cls,
        stats: PairStats,
        *,
        scenario: str,
        target: str,
        provider: str,
        model: str,
        status: str,
        peak_rss_bytes: int,
        workers: int = 1,
        client_cpu_saturation: float | None = None,
        client_saturated: bool | None = None,
        client_loop_lag_p95_ms: float | None = None,
    ) -> PairResult:
        return cls(
            scenario=scenario,
            target=target,
            provider=provider,
            model=model,
            status=status,
            requests=stats.attempts,
            ok=stats.ok,
            errors=stats.errors,
            latency_p50_ms=stats.p50_ms(stats.latencies_us),
            ttft_p50_ms=stats.p50_ms(stats.ttfts_us),
            throughput_rps=stats.rate(),
            peak_rss_bytes=peak_rss_bytes,
            workers=workers,
            client_cpu_saturation=client_cpu_saturation,
            client_saturated=client_saturated,
            client_loop_lag_p95_ms=client_loop_lag_p95_ms,
            errors_by_type={
                kind: dict(counts.most_common())
                for kind, counts in sorted(
                    stats.errors_by_type.items(), key=lambda item: -sum(item[1].values())
                )
            },
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
