"""One request per target before the measured ones: stop at once when a target cannot answer.

Why: a wrong `base_url`, an unset key or a server that is not up used to cost the whole run
(every attempt failed, exit 0) and said why only inside the event files. One request with the
scenario's own shape (its first prompt, streamed or not, tools, system prompt; `max_tokens` 1
so it costs next to nothing) finds all three in one round trip.

Only a failure that no later request can do better on stops the run: nothing answered
(`connection`), the target refused the request (`client_error`: 4xx but 429), or no byte of an
answer before the request timeout. A 5xx, a 429 or a malformed reply is a warning (the target
is up; such failures are what a benchmark measures). The in-process mock is never checked. The
pre-flight request is not an event: it is not part of the load, like calibration's.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from stages.execute.client.providers import Attempt, RequestSpec, build_provider
from stages.execute.load.plan import PreparedRun
from stages.execute.record.diagnosis import hint

__all__ = ["FATAL", "PreflightResult", "check_target", "checked_runs"]

FATAL = frozenset({"connection", "client_error"})
"""Error types that stop the run: the target cannot answer any request (also a timeout with
nothing received)."""


@dataclass(frozen=True)
class PreflightResult:
    target: str
    error_type: str | None
    """None when the request succeeded."""
    message: str
    fatal: bool

    def describe(self, run: PreparedRun) -> str:
        """One line (two with a hint) saying what the check found, for stderr."""
        advice = hint(self.error_type or "", self.message, run.target)
        line = f"{self.target}: the pre-flight request failed: {self.error_type}: {self.message}"
        return line + (f"\n  → {advice}" if advice else "")


def checked_runs(runs: list[PreparedRun]) -> list[PreparedRun]:
    """The first pair of each target that talks over the network (one check per target)."""
    first: dict[str, PreparedRun] = {}
    for run in runs:
        if run.target.provider != "mock":
            first.setdefault(run.target.name, run)
    return list(first.values())


async def check_target(run: PreparedRun) -> PreflightResult:
    """Send the pair's first prompt once, as the measured requests will, with `max_tokens` 1."""
    scenario = run.scenario
    spec = RequestSpec(
        prompt=run.prompts[run.plan.prompt_indexes[0]],
        max_tokens=1,
        stream=scenario.streaming_required,
        tools=scenario.tools_required,
        system_prompt=scenario.system_prompt,
        tool_choice=scenario.tool_choice,
    )
    attempt = Attempt()
    provider = build_provider(run.settings(1))
    try:
        with trio.move_on_after(run.request_timeout_s) as deadline:
            await provider.send(spec, attempt)
    finally:
        with trio.CancelScope(shield=True):
            await provider.aclose()
    name = run.target.name
    if deadline.cancelled_caught:
        silent = not attempt.chunk_ns
        message = (
            f"no {'answer' if silent else 'complete answer'} within {run.request_timeout_s:g}s"
        )
        return PreflightResult(name, "timeout", message, fatal=silent)
    if attempt.ok:
        return PreflightResult(name, None, "", fatal=False)
    kind = attempt.error_type or attempt.status
    return PreflightResult(name, kind, attempt.error_message or "", fatal=kind in FATAL)
