"""A run whose requests fail says why, stops early when a target cannot answer, and exits with a
code a cron job can act on. Real processes against real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

from schemas import TargetConfig
from stages.execute.client.providers.base import Attempt
from stages.execute.record.diagnosis import describe_errors
from stages.execute.record.summary import MAX_MESSAGES, PairStats
from tests._execute_support import requests
from tests.conftest import mock_server_process, run_pipeline


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(tmp_path: Path, *targets: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text("\n".join(targets))
    return path


def _target(name: str, provider: str, base_url: str) -> str:
    return f'[[targets]]\nname = "{name}"\nprovider = "{provider}"\nmodel = "m"\nbase_url = "{base_url}"\n'


MOCK = '[[targets]]\nname = "local"\nprovider = "mock"\nmodel = "mock"\n'


def test_a_target_nothing_answers_stops_the_run_before_any_event(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    config = _config(tmp_path, MOCK, _target("dead", "openai-compatible", dead))
    data = tmp_path / "data"
    for command in ("execute", "run"):
        done = run_pipeline(
            "--config", str(config), "--data-dir", str(data), command, "--requests", "3",
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "dead: the pre-flight request failed: connection: ConnectError" in done.stderr
        assert f"nothing answered at {dead}: is the server up" in done.stderr
        assert "--no-preflight" in done.stderr and "Traceback" not in done.stderr
        assert not data.exists()  # nothing measured, nothing written, not even for `local`


def test_without_preflight_every_failure_is_an_event_and_the_exit_code_says_so(
    tmp_path: Path,
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    config = _config(tmp_path, MOCK, _target("dead", "openai-compatible", dead))
    data = tmp_path / "data"
    args = ("--config", str(config), "--data-dir", str(data))
    done = run_pipeline(
        *args, "execute", "--requests", "3", "--no-preflight", "--json", cwd=tmp_path
    )
    assert done.returncode == 4, done.stderr
    summary = json.loads(done.stdout)
    assert summary["failed_targets"] == ["dead"]  # `local` answered, so it is not listed
    dead_pair = next(p for p in summary["results"] if p["target"] == "dead")
    assert dead_pair["errors_by_type"] == {
        "connection": {
            f"ConnectError: all attempts to connect to 127.0.0.1:{dead.split(':')[2][:-3]} failed: Connection refused": 3
        }
    }
    assert "quickstart × dead: 3 of 3 measured attempts failed:" in done.stderr
    assert "connection ×3: ConnectError" in done.stderr and "is the server up" in done.stderr
    assert "pipeline events --last --target dead" in done.stderr
    assert "CPU-saturated" not in done.stderr  # a run of milliseconds is not judged
    frame = requests(data).filter(target="dead")
    assert frame.height == 3 and set(frame["error_type"]) == {"connection"}
    # `run` goes on with the other stages (the failures are data) and still exits 4.
    done = run_pipeline(*args, "run", "--requests", "3", "--no-preflight", cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    assert (data / "results" / "benchmark_results.parquet").exists()
    assert (data / "recommendations").exists()


def test_a_wrong_base_url_is_named_with_the_fix(tmp_path: Path) -> None:
    with mock_server_process() as root:
        config = _config(
            tmp_path,
            _target("claude", "anthropic", f"{root}/v1"),  # the client adds /v1/messages
            _target("vllm", "openai-compatible", root),  # it wants /v1
            _target("right", "openai-compatible", f"{root}/v1"),
        )
        done = run_pipeline(
            "--config", str(config), "--data-dir", str(tmp_path / "d"), "execute",
            "--requests", "2", cwd=tmp_path, env={"ANTHROPIC_API_KEY": "sk-test"},
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr
    assert "claude: the pre-flight request failed: client_error: HTTP 404" in lines
    assert f"check base_url ({root}/v1); it wants it without /v1" in lines
    assert "vllm: the pre-flight request failed: client_error: HTTP 404" in lines
    assert f"check base_url ({root}); it wants it with /v1" in lines
    assert "right:" not in lines


def test_a_target_that_answers_badly_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    with mock_server_process("--error-rate", "1", "--error-kinds", "server_error") as root:
        config = _config(tmp_path, _target("broken", "openai-compatible", f"{root}/v1"))
        done = run_pipeline(
            "--config", str(config), "--data-dir", str(tmp_path / "d"), "-v", "execute",
            "--requests", "4", cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "warning: broken: the pre-flight request failed: server_error: HTTP 500" in done.stderr
    assert "(running anyway)" in done.stderr
    assert "server_error ×4: HTTP 500 Internal Server Error: The server had an error" in done.stderr
    assert "(mock). ×4" in done.stderr  # -v: every distinct message with its count


def test_workers_for_a_mock_target_is_said_not_to_apply(tmp_path: Path) -> None:
    done = run_pipeline(
        "--data-dir", str(tmp_path / "d"), "execute", "--requests", "2", "--workers", "2",
        "--target", "mock-fast", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: --workers does not apply to mock-fast" in done.stderr
    assert "mock-slow" not in done.stderr  # only the selected targets


def test_error_messages_are_counted_within_a_bound() -> None:
    stats = PairStats()
    for i in range(MAX_MESSAGES + 5):
        attempt = Attempt()
        attempt.fail("client_error", f"HTTP 404: not found {i}")
        stats.add(attempt, warmup=False)
    stats.add(Attempt(), warmup=True)  # warmup counts nowhere
    counts = stats.errors_by_type["client_error"]
    assert len(counts) == MAX_MESSAGES + 1 and counts[""] == 5  # the rest as "other messages"
    target = TargetConfig(name="t", provider="openai", model="m")
    sample, *_ = describe_errors({"client_error": dict(counts)}, target)
    assert sample.startswith("client_error ×13: HTTP 404: not found 0 → the path was not found")
    every = describe_errors({"client_error": dict(counts)}, target, every=True)[0]
    assert "not found 7 ×1" in every and "(other messages) ×5" in every
    merged = PairStats()
    merged.merge(stats.delta())
    assert merged.errors_by_type == stats.errors_by_type and not stats.delta().errors_by_type
    assert Counter(merged.errors_by_type["client_error"]).total() == 13
