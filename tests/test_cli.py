"""The CLI frame: help everywhere and in the README, config errors as `file: field: message`, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from pipeline.cli.main import cli as group
from tests.conftest import ROOT, CliResult, mock_server_process, run_pipeline
from tests.writer_proc import batch

Run = Callable[..., CliResult]


def walk(command: click.Command, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        path = f"{prefix} {name}".strip()
        yield path, sub
        yield from walk(sub, path)


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = list(walk(group))
    assert len(commands) >= 14
    for path, command in commands:
        assert command.help and command.help.strip(), f"{path} has no help text"
        assert f"pipeline {path}" in readme, f"`pipeline {path}` is not documented in README.md"


def test_help_works_for_every_command(cli: Run) -> None:
    for path, _ in walk(group):
        result = cli(*path.split(), "--help")
        assert result.code == 0 and "Usage:" in result.out, path


def test_a_bad_config_exits_2_naming_file_and_field(cli: Run, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[targets]]\nname = "m"\nprovider = "mock"\nmodel = "x"\n'
        "mock = { error_injection_rate = 1.5 }\n"
        '[[scenarios]]\nname = "s"\ntest_prompts = ["hi"]\nconcurrency_level = 500\n'
    )
    result = cli("--config", str(config), "scenarios", "list")
    assert result.code == 2
    assert (
        f"{config}: targets[0].mock.error_injection_rate: Input should be less than or equal to 1"
        in result.err
    )
    assert (
        f"{config}: scenarios[0].concurrency_level: Input should be less than or equal to 100"
        in result.err
    )
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets = [", "invalid TOML"),
        (
            '[[targets]]\nname = "../up"\nprovider = "mock"\nmodel = "x"\n',
            "targets[0].name: invalid name '../up'",
        ),
        ('[[targets]]\nname = "a"\nprovider = "nope"\nmodel = "x"\n', "targets[0].provider"),
        (
            '[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\ncolour = 1\n',
            "targets[0].colour: Extra inputs",
        ),
        (
            'default_scenarios = ["nope"]\n[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n',
            "default_scenarios[0]: unknown scenario 'nope'",
        ),
    ],
)
def test_config_errors_name_the_field(cli: Run, tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = cli("--config", str(config), "scenarios", "validate")
    assert result.code == 2 and message in result.err and str(config) in result.err


TARGET = '[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "deep = " + "[" * 3000 + "]" * 3000 + "\n" + TARGET,
            "(top level): arrays or tables nested",
        ),
        (
            "big = " + "9" * 5000 + "\n" + TARGET,
            "(top level): invalid TOML value: Exceeds the limit",
        ),
        (TARGET + "mock = { seed = 1e400 }\n", "targets[0].mock.seed: Input should be a finite"),
        (
            TARGET + "[[scenarios]]\nname = 's'\ntest_prompts = ['x']\nduration = inf\n",
            "scenarios[0].duration: invalid duration inf: must be a finite number",
        ),
        (TARGET + '"a b\\nc:" = 1\n', 'targets[0]["a b\\nc:"]: Extra inputs'),
        ("targets = 5\n", "targets: Input should be a valid list"),
        ("targets = [5]\n", "targets[0]: Input should be a valid dictionary"),
        (TARGET + "mock = [1, 2]\n", "targets[0].mock: Input should be a valid dictionary"),
        (TARGET + 'name2 = "é🙂"\n', "targets[0].name2: Extra inputs"),
    ],
)
def test_odd_shapes_and_huge_values_exit_2_naming_the_field(
    cli: Run, tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text, encoding="utf-8")
    result = cli("--config", str(config), "scenarios", "validate")
    assert result.code == 2 and f"{config}: {message}" in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_validate_reports_every_file_and_every_problem(cli: Run, tmp_path: Path) -> None:
    good, bad, worse = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "worse.toml"
    good.write_text(TARGET)
    bad.write_text(TARGET + "max_retries = 99\n")
    worse.write_text(
        TARGET
        + '[[scenarios]]\nname = "s"\nprompts_file = "none.jsonl"\n'
        + '[[scenarios]]\nname = "t"\nprompts_file = "bin.jsonl"\n'
    )
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe")
    result = cli(
        "scenarios", "validate", str(bad), str(tmp_path / "nowhere.toml"), str(worse), str(good)
    )
    assert result.code == 2
    lines = [line.removeprefix("error: ") for line in result.err.strip().splitlines()]
    assert f"{bad}: targets[0].max_retries: Input should be less than or equal to 10" in lines
    assert f"{tmp_path / 'nowhere.toml'}: config file not found" in lines
    assert any(
        line.endswith("none.jsonl: prompts_file: cannot read (No such file or directory)")
        for line in lines
    )
    assert any(line.endswith("bin.jsonl: prompts_file: not UTF-8 text") for line in lines)
    assert f"{good}: ok (5 scenarios, 1 target)" in lines
    assert len(lines) == 5
    assert cli("scenarios", "validate", str(good), str(good)).code == 0


def test_a_prompts_line_nested_too_deeply_exits_2(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('"fine"\n' + "[" * 100_000 + "\n")
    config = tmp_path / "c.toml"
    config.write_text(TARGET + '[[scenarios]]\nname = "s"\nprompts_file = "p.jsonl"\n')
    result = cli("--config", str(config), "scenarios", "validate")
    assert result.code == 2 and "p.jsonl: line 2: JSON nested too deeply" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "1e400"], "Invalid value for '--duration': invalid duration '1e400'"),
        (["--duration", "8d"], "command line: quickstart.duration: must be at most 7 days"),
        (["--rate", "inf"], "command line: quickstart.rate: Input should be a finite number"),
        (
            ["--rate", "1000000", "--duration", "7d"],
            "command line: quickstart.duration: rate × duration plans",
        ),
        (["--requests", "10000001"], "command line: quickstart.expected_operations"),
        (["--seed", str(2**63)], "Invalid value for '--seed'"),
    ],
)
def test_execute_overrides_are_validated_like_the_config(
    cli: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    data = tmp_path / "d"
    result = cli("--data-dir", str(data), "execute", *args)
    assert result.code == 2 and message in result.err, result.err
    assert "Traceback" not in result.err and not data.exists()


def test_a_missing_config_file_exits_2(cli: Run) -> None:
    result = cli("--config", "nowhere.toml", "scenarios", "list")
    assert result.code == 2 and "nowhere.toml: config file not found" in result.err


def test_a_bad_prompts_file_names_file_and_line(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    config = tmp_path / "c.toml"
    config.write_text(
        '[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n'
        '[[scenarios]]\nname = "s"\nprompts_file = "prompts.jsonl"\n'
    )
    result = cli("--config", str(config), "scenarios", "validate")
    assert result.code == 2 and "prompts.jsonl: line 2: invalid JSON" in result.err


def test_the_built_in_default_lists_the_builtin_scenarios(cli: Run) -> None:
    result = cli("scenarios", "list", "--json")
    assert result.code == 0
    names = {row["name"] for row in json.loads(result.out)}
    assert {"quickstart", "chat-stream", "tool-calling", "long-prompt", "load-test"} <= names
    shown = json.loads(cli("scenarios", "show", "quickstart").out)
    assert shown["concurrency_level"] == 4 and shown["origin"] == "built-in"
    assert cli("scenarios", "show", "nope").code == 2


def test_pipeline_toml_in_the_working_directory_is_picked_up(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "pipeline.toml").write_text(
        '[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n'
        '[[scenarios]]\nname = "mine"\ntest_prompts = ["hi"]\n'
    )
    rows = json.loads(cli("scenarios", "list", "--json").out)
    assert {"name": "mine", "origin": "config"}.items() <= next(
        r for r in rows if r["name"] == "mine"
    ).items()


def test_usage_errors_exit_2(cli: Run) -> None:
    assert cli("no-such-command").code == 2
    assert cli("archive").code == 2  # --older-than is required


def test_compact_and_archive_from_the_cli(cli: Run, tmp_path: Path) -> None:
    from pipeline.store.eventlog import EventLog

    data = tmp_path / "d"
    for number in range(3):
        EventLog(data).writer("r1", f"w{number}").append("requests", batch("r1", "w0", number, 5))
    result = cli("--data-dir", str(data), "compact", "--json")
    assert result.code == 0
    assert json.loads(result.out)[0]["events"] == 15
    result = cli("--data-dir", str(data), "archive", "--older-than", "30", "--json")
    assert json.loads(result.out) == [{"table": "requests", "date": "2026-01-02", "files": 1}]


def test_data_dir_comes_from_the_environment(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.store.eventlog import EventLog

    data = tmp_path / "from-env"
    for number in range(2):
        EventLog(data).writer("r1", f"w{number}").append("requests", batch("r1", "w0", number, 5))
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(data))
    assert json.loads(cli("compact", "--json").out)[0]["files_in"] == 2


def test_a_second_process_waits_for_the_lock_then_fails_clearly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pipeline.store.lock import exclusive_lock\n"
            "with exclusive_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(30)\n",
            str(data),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (tmp_path / "pipeline.toml").write_text(
            'lock_timeout = "0.5s"\n[[targets]]\nname = "a"\nprovider = "mock"\nmodel = "x"\n'
        )
        started = time.monotonic()
        result = run_pipeline("--data-dir", str(data), "compact", cwd=tmp_path)
        assert time.monotonic() - started >= 0.5  # it waited for the lock before giving up
        assert result.returncode == 1
        assert f"another pipeline process (pid {holder.pid})" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    assert run_pipeline("--data-dir", str(data), "compact", cwd=tmp_path).returncode == 0


def test_estimated_token_counts_are_marked_in_every_table(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """A server that sends no usage (the mock as llama-cpp-python): what rests on estimated
    counts carries a ~ in aggregate's and compare's tables, with a note saying why."""
    with mock_server_process("--mimic", "llama-cpp-python", "--latency", "1ms") as root:
        config = tmp_path / "est.toml"
        config.write_text(
            f"""
default_scenarios = ["s"]
[compare]
min_requests = 3
[prices.tiny]
input = 1.0
output = 2.0
[[targets]]
name = "lcp"
provider = "openai-compatible"
model = "tiny"
base_url = "{root}/v1"
[[scenarios]]
name = "s"
test_prompts = ["hi"]
expected_operations = 3
streaming_required = true
"""
        )
        data = str(tmp_path / "data")
        assert cli("--data-dir", data, "--config", str(config), "execute").code == 0
    aggregated = cli("--data-dir", data, "--config", str(config), "aggregate")
    assert aggregated.code == 0 and "~" in aggregated.out and "estimated" in aggregated.err
    compared = cli("--data-dir", data, "--config", str(config), "compare")
    assert compared.code == 0 and "~" in compared.out and "estimated" in compared.out


@pytest.mark.parametrize("prompts", ["/dev/zero", ".", "big.jsonl"])
def test_a_prompts_file_that_is_not_a_regular_file_or_too_large_exits_2(
    cli: Run, tmp_path: Path, prompts: str
) -> None:
    with open(tmp_path / "big.jsonl", "wb") as big:
        big.truncate(256 * 1024 * 1024 + 1)  # sparse: no disk used
    config = tmp_path / "c.toml"
    config.write_text(TARGET + f'[[scenarios]]\nname = "s"\nprompts_file = "{prompts}"\n')
    result = cli("--config", str(config), "scenarios", "validate")
    assert result.code == 2, result.err
    assert "prompts_file: not a regular file" in result.err or "over the 256 MiB" in result.err


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ("[]", "default_scenarios: List should have at least 1 item"),
        (
            '["quickstart", "quickstart"]',
            "default_scenarios: default scenario names must be unique",
        ),
    ],
)
def test_default_scenarios_is_not_empty_and_names_each_once(
    cli: Run, tmp_path: Path, defaults: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"default_scenarios = {defaults}\n" + TARGET)
    data = tmp_path / "d"
    result = cli("--data-dir", str(data), "--config", str(config), "execute", "--requests", "1")
    assert result.code == 2 and f"{config}: {message}" in result.err and not data.exists()


def test_a_scenario_or_target_named_twice_on_the_command_line_runs_once(
    cli: Run, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    args = ["--scenario", "quickstart"] * 2 + ["--target", "mock-fast"] * 2
    result = cli("-q", "--data-dir", str(data), "execute", "--requests", "1", "--json", *args)
    assert result.code in (0, 4), result.err  # 4: the one request drew the mock's 2% fault
    assert len(json.loads(result.out)["results"]) == 1
