"""-q and -v do what `pipeline --help` says, for every command, in a real process.

-q: "No progress bars, summary tables or notes: a command that changes data prints only warnings
and errors (and --json). A question (compare, events, targets, scenarios) still prints its
answer." -v: "execute lists every distinct error message; mock-server logs each request"."""

from __future__ import annotations

from pathlib import Path

from tests.cli_proc import run_batch

CHANGES = [
    ["execute", "--requests", "30", "--seed", "3"],
    ["aggregate"],
    ["profile"],
    ["recommend"],
    ["report", "--out", "report.html"],
    ["compact"],
    ["archive", "--older-than", "3650"],
    ["run", "--requests", "30", "--seed", "4"],
]
QUESTIONS = [
    ["compare", "--scenario", "quickstart"],
    ["events", "--last"],
    ["targets", "list"],
    ["scenarios", "list"],
]


def test_quiet_silences_every_command_that_changes_data_and_no_answer(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    loud = run_batch([[*data, *args] for args in CHANGES + QUESTIONS], tmp_path)
    quiet = run_batch([["-q", *data, *args] for args in CHANGES + QUESTIONS], tmp_path)
    for noisy, hushed in zip(loud, quiet, strict=True):
        command = hushed["args"][3]
        assert noisy["code"] == hushed["code"] == 0, (hushed, noisy)
        assert (noisy["out"] + noisy["err"]).strip(), noisy  # each says something without -q
        if [command] in [q[:1] for q in QUESTIONS]:
            assert hushed["out"].strip(), hushed  # an answer is never silenced
            continue
        assert hushed["out"] == "", hushed
        # stderr keeps warnings and errors only: here why requests failed (the default mock
        # injects faults), never a note or a summary line
        for line in hushed["err"].splitlines():
            assert _warning_or_error(line), (command, line)
        assert any(
            not _warning_or_error(line) for line in (noisy["out"] + noisy["err"]).splitlines()
        )


def _warning_or_error(line: str) -> bool:
    return line.startswith(("warning:", "error:", "REGRESSION", "  ")) or (
        " measured attempts failed:" in line
    )


def test_verbose_lists_every_distinct_error_message(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        "[[targets]]\n"
        'name = "flaky"\nprovider = "mock"\nmodel = "m"\n'
        'mock = { error_injection_rate = 0.6, simulated_latency = "1ms", seed = 2, '
        'error_kinds = ["rate_limit", "server_error", "unavailable"] }\n'
    )
    common = ["--config", str(config), "--data-dir", str(tmp_path / "d")]
    plain, verbose = run_batch(
        [
            [*common, "execute", "--requests", "40", "--seed", "1"],
            [*common, "-v", "execute", "--requests", "40", "--seed", "1"],
        ],
        tmp_path,
    )
    kinds = [line for line in plain["err"].splitlines() if line.startswith("  ")]
    detailed = [line for line in verbose["err"].splitlines() if line.startswith("  ")]
    assert len(kinds) == len(detailed) >= 2  # one line per error type either way
    assert all(line.count(" ×") == 1 for line in kinds)  # the type's count and one sample
    assert all(line.count(" ×") >= 2 for line in detailed)  # and each message's count
