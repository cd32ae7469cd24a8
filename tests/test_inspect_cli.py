"""Looking at what happened without writing code: `pipeline events`, `pipeline targets`, and the
global options accepted after the command."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult

Run = Callable[..., CliResult]

CONFIG = """
default_scenarios = ["s"]

[[targets]]
name = "good"
provider = "mock"
model = "mock-small"
mock = { simulated_latency = "1ms", token_generation_rate = 5000 }

[[targets]]
name = "limited"
provider = "mock"
model = "mock-small"
mock = { simulated_latency = "1ms", error_injection_rate = 1.0, error_kinds = ["rate_limit"] }

[[targets]]
name = "gpt"
provider = "openai"
model = "gpt-4o-mini"
base_url = "https://user:hunter2secret@api.example.com/v1"
api_key_env = "INSPECT_TEST_KEY"

[[scenarios]]
name = "s"
test_prompts = ["hi"]
expected_operations = 3
streaming_required = true
max_tokens = 4
"""


@pytest.fixture
def ran(cli: Run, tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    args = ["-q", "--data-dir", str(data), "--config", str(config), "execute"]
    assert (
        cli(*args, "--target", "good", "--target", "limited").code == 4
    )  # limited: every attempt refused
    return config, data


def test_events_show_why_requests_failed(cli: Run, ran: tuple[Path, Path]) -> None:
    config, data = ran
    table = cli("--data-dir", str(data), "events", "--last", "--status", "error")
    assert table.code == 0, table.err
    lines = [line for line in table.out.splitlines() if "rate_limited" in line]
    assert len(lines) == 3 and all(" 429 " in line for line in lines)
    assert "target limited" in table.out and "good" not in table.out  # one target: the title
    assert "limited ×3: HTTP 429" in table.out  # why, once per distinct message
    assert max(len(line) for line in table.out.splitlines()) <= 80
    rows = [
        json.loads(line)
        for line in cli(
            "--data-dir", str(data), "events", "--target", "good", "--json"
        ).out.splitlines()
    ]
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert all(isinstance(r["chunk_offsets_us"], list) for r in rows)  # every column
    out = cli("--data-dir", str(data), "events", "--csv", "--error-type", "rate_limited").out
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert len(parsed) == 3 and {r["target"] for r in parsed} == {"limited"}
    assert {r["http_status"] for r in parsed} == {"429"}


def test_events_of_an_unknown_run_and_a_limit(cli: Run, ran: tuple[Path, Path]) -> None:
    _, data = ran
    none = cli("--data-dir", str(data), "events", "--run", "20990101T000000Z-000000", "--json")
    assert none.code == 0 and none.out == ""
    two = cli("--data-dir", str(data), "events", "--limit", "2")
    assert two.code == 0 and "(2 of 6;" in two.out and "4 more" in two.err


def _row_text(out: str, name: str) -> str:
    """The text of the row named `name`: its line in a table, or its block when the table was
    too wide for 80 columns and was stacked (`- name NAME · ...`, continued by indented lines)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{name} "):
            return line
        if line.startswith(f"- name {name} "):
            rest = lines[i + 1 :]
            end = next((j for j, x in enumerate(rest) if not x.startswith(" ")), len(rest))
            return " ".join([line, *rest[:end]])
    raise AssertionError(f"no row {name!r} in:\n{out}")


def test_targets_say_whether_the_key_is_set_and_never_show_it(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    monkeypatch.delenv("INSPECT_TEST_KEY", raising=False)
    listed = cli("--config", str(config), "targets", "list")
    gpt = _row_text(listed.out, "gpt")
    assert "INSPECT_TEST_KEY" in gpt and "not set" in gpt
    assert "https://api.example.com/v1" in gpt and "hunter2secret" not in listed.out
    monkeypatch.setenv("INSPECT_TEST_KEY", "sk-inspect-canary-value")
    shown = cli("--config", str(config), "targets", "show", "gpt")
    payload = json.loads(shown.out)
    assert payload["key"] == "set" and payload["key_variable"] == "INSPECT_TEST_KEY"
    assert "sk-inspect-canary-value" not in shown.out and "hunter2secret" not in shown.out
    mock = json.loads(cli("--config", str(config), "targets", "show", "limited").out)
    assert mock["mock"]["error_injection_rate"] == 1.0 and mock["key"] == "not needed"
    unknown = cli("--config", str(config), "targets", "show", "nope")
    assert unknown.code == 2 and "unknown target 'nope'" in unknown.err


def test_global_options_are_accepted_after_the_command(cli: Run, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    data = tmp_path / "after"
    result = cli(
        "execute", "--data-dir", str(data), "--config", str(config), "-q", "--target", "good"
    )
    assert result.code == 0, result.err
    assert list((data / "events" / "requests").rglob("*.arrow"))
    assert result.out == ""  # -q after the command too: no table
    later = cli("--data-dir", str(tmp_path / "first"), "aggregate", "--data-dir", str(data))
    assert later.code == 0 and not (tmp_path / "first").exists()  # the later one wins
