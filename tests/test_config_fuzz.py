"""Hypothesis-mutated configs through the real CLI: no traceback, no hang, exit 2 names the field.

Each example is the valid `BASE_CONFIG` with one to three mutations (`tests/config_fuzz.py`),
run as `scenarios validate FILE` and as `execute --requests 1` against the built-in mock only
(nothing touches the network). Most examples run in-process (fast); a few through real
subprocesses, where a crash, a traceback or a hang looks exactly as a user would see it.

`PIPELINE_FUZZ_EXAMPLES=N` runs N examples instead of the default (see the README for the
counts found by hand before and after the bounds).
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, given, settings

from tests.config_fuzz import check_outcome, event_files, fuzzed_configs, pin_timeouts, to_toml
from tests.conftest import CliResult, run_pipeline

EXAMPLES = int(os.environ.get("PIPELINE_FUZZ_EXAMPLES", "0"))
IN_PROCESS_EXAMPLES = EXAMPLES or 300
SUBPROCESS_EXAMPLES = max(1, EXAMPLES // 20) if EXAMPLES else 6
VALIDATE_S, EXECUTE_S = 10.0, 20.0
"""Hard limits per run: a valid example takes well under a second (its timeouts are pinned to
1 s), so a run past these is a hang."""
_SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


class Hung(Exception):
    pass


@contextmanager
def hard_limit(seconds: float, what: str) -> Iterator[None]:
    """Fail the example when the run inside takes longer than `seconds` (SIGALRM)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"{what} still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _write(folder: Path, name: str, document: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    path = folder / name
    path.write_text(to_toml(document), encoding="utf-8")
    return path


_seq = itertools.count()


@settings(max_examples=IN_PROCESS_EXAMPLES, deadline=None, suppress_health_check=_SLOW)
@given(drawn=fuzzed_configs())
def test_fuzzed_configs_in_process(
    cli: Callable[..., CliResult], tmp_path: Path, drawn: tuple[dict[str, Any], list[str]]
) -> None:
    document, _ = drawn
    case = tmp_path / str(next(_seq))
    config = _write(case / "v", "c.toml", document)
    with hard_limit(VALIDATE_S, "scenarios validate"):
        result = cli("--config", str(config), "scenarios", "validate")
    check_outcome(result.code, result.err, (str(config),))
    valid = result.code == 0

    config = _write(case / "e", "c.toml", pin_timeouts(document))
    data = case / "data"
    with hard_limit(EXECUTE_S, "execute --requests 1"):
        result = cli(
            "-q", "--data-dir", str(data), "--config", str(config), "execute", "--requests", "1"
        )
    check_outcome(result.code, result.err, (str(config), "command line"), data)
    # A config that validates runs (the mock needs no key and supports every capability), and
    # a run that exits 0 ran something: its events are there.
    # (4: every attempt drew one of the mock's injected faults; still a run)
    assert not valid or result.code in (0, 4), result.err
    assert result.code not in (0, 4) or event_files(data), "a run but no events were written"


@settings(max_examples=SUBPROCESS_EXAMPLES, deadline=None, suppress_health_check=_SLOW)
@given(drawn=fuzzed_configs())
def test_fuzzed_configs_in_subprocesses(
    tmp_path: Path, drawn: tuple[dict[str, Any], list[str]]
) -> None:
    document, _ = drawn
    case = tmp_path / str(next(_seq))
    config = _write(case / "v", "c.toml", document)
    # `subprocess.run`'s timeout kills the run and fails the example: that is the hang check.
    done = run_pipeline("scenarios", "validate", str(config), cwd=case, timeout=30)
    check_outcome(done.returncode, done.stderr, (str(config),))
    config = _write(case / "e", "c.toml", pin_timeouts(document))
    data = case / "data"
    done = run_pipeline(
        "-q",
        "--data-dir",
        str(data),
        "--config",
        str(config),
        "execute",
        "--requests",
        "1",
        cwd=case,
        timeout=60,
    )
    check_outcome(done.returncode, done.stderr, (str(config), "command line"), data)
