"""A one-off count of each prompt's input tokens, asked of the target itself.

Why: a server that sends no usage in its streams (llama-cpp-python ignores
`stream_options.include_usage`) leaves the client to estimate input tokens, and characters / 4
is far off for a small vocabulary or a chat template (59 for a true 134 against a tiny model).
The same server does report usage on a non-streamed reply, and a prompt has the same number of
tokens every time it is sent, so asking once per distinct prompt (`max_tokens` 1, with the
scenario's system prompt and tools, as the measured requests carry them) gives the exact count
for every request that sends it (`input_token_rule = calibrated`).

These requests are not part of the benchmark: they are sent before the pair's `started` event,
a few at a time, and what they found is recorded on it (`runs.token_calibration`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import trio

from schemas import BenchmarkScenario
from stages.execute.client.providers import Attempt, Provider, RequestSpec

__all__ = ["CALIBRATION_PROMPTS", "CALIBRATION_SLOTS", "calibrate", "calibration_json"]

CALIBRATION_PROMPTS = 256
"""At most this many distinct prompts are asked about; any others are estimated."""
CALIBRATION_SLOTS = 4
"""Calibration requests in flight at once."""


async def calibrate(
    provider: Provider,
    scenario: BenchmarkScenario,
    prompts: Sequence[str],
    prompt_indexes: Sequence[int],
    timeout_s: float,
) -> dict[int, int]:
    """Prompt index → input tokens as the target reports them, for the prompts the plan uses
    (the first `CALIBRATION_PROMPTS` of them); a prompt whose request failed is left out."""
    wanted = sorted(set(prompt_indexes))[:CALIBRATION_PROMPTS]
    found: dict[int, int] = {}
    limiter = trio.CapacityLimiter(CALIBRATION_SLOTS)

    async def ask(index: int) -> None:
        spec = RequestSpec(
            prompt=prompts[index],
            max_tokens=1,
            stream=False,
            tools=scenario.tools_required,
            system_prompt=scenario.system_prompt,
            tool_choice=scenario.tool_choice,
        )
        attempt = Attempt()
        async with limiter:
            with trio.move_on_after(timeout_s):
                await provider.send(spec, attempt)
        if attempt.ok and attempt.input_tokens is not None:
            found[index] = attempt.input_tokens

    async with trio.open_nursery() as nursery:
        for index in wanted:
            nursery.start_soon(ask, index)
    return found


def calibration_json(found: dict[int, int], asked: int) -> str:
    """What `runs.token_calibration` records: the counts, and how many prompts were asked."""
    return json.dumps(
        {"asked": asked, "input_tokens": {str(k): v for k, v in sorted(found.items())}},
        sort_keys=True,
    )
