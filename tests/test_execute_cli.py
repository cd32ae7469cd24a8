"""`pipeline execute` end to end: the built-in default, bad input, secrets, interrupts, load shapes."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.store.eventlog import EventLog
from schemas import ProviderKind, register_provider, unregister_provider
from stages.execute.client.providers.mock import MockProvider
from stages.execute.load.plan import ExecuteOptions, arrival_offsets
from tests._execute_support import config, mock_server, requests, run, runs, scenario, target
from tests.conftest import ROOT, CliResult
from tests.hostile_server import Canned, hostile_server

FAKE_KEY = "sk-fake-NEVERWRITTEN-4f6a1c9e2b7d"


def test_default_config_end_to_end(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = cli("--data-dir", str(data), "execute", "--json", "--seed", "7")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["status"] == "completed" and summary["seed"] == 7
    frame = requests(data)
    assert set(frame["run_id"]) == {summary["run_id"]}
    assert frame.height == 40 and frame["event_id"].n_unique() == 40  # 2 mock targets × 20
    assert set(frame["attempt"]) == {1} and not frame["warmup"].any()
    assert set(frame["provider"]) == {"mock"} and set(frame["scenario"]) == {"quickstart"}
    for pair in summary["results"]:
        rows = frame.filter(target=pair["target"])
        assert rows.height == pair["requests"] == 20
        assert rows.filter(status="ok").height == pair["ok"]
        assert pair["ok"] + pair["errors"] == 20
    ok = frame.filter(status="ok")
    assert (ok["token_source"] == "server").all() and (ok["output_tokens"] == 32).all()
    assert (ok["ttft_us"] > 0).all() and (ok["latency_us"] >= ok["ttft_us"]).all()
    run_rows = runs(data)
    assert run_rows.height == 4
    finished = run_rows.filter(kind="finished")
    assert set(finished["status"]) == {"completed"} and set(finished["requests_sent"]) == {20}
    first = finished.to_dicts()[0]
    assert (
        first["python"]
        and first["cpus"] >= 1
        and first["memory_bytes"] > 0
        and first["package_version"]
    )
    assert first["config_hash"] and json.loads(first["target_config"])["provider"] == "mock"
    samples = EventLog(data).replay("samples").collect()
    assert samples.height >= 2 and (samples["rss_bytes"] > 0).all()


def test_table_on_a_pipe_and_the_same_seed_gives_the_same_prompts(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    picks = []
    for quiet, name in ((False, "a"), (True, "b")):
        data = tmp_path / name
        result = cli(
            *(["-q"] if quiet else []),
            "--data-dir",
            str(data),
            "execute",
            "--scenario",
            "chat-stream",
            "--target",
            "mock-fast",
            "--requests",
            "12",
            "--seed",
            "5",
        )
        assert result.code == 0
        if quiet:  # no table, no notes: only why requests failed (the mock injects faults)
            assert result.out == ""
            assert all(" × " in line or line.startswith("  ") for line in result.err.splitlines())
        else:
            header, row = result.out.splitlines()[1:3]
            assert header.split()[:4] == ["scenario", "target", "status", "attempts"]
            assert row.split()[:4] == ["chat-stream", "mock-fast", "completed", "12"]
            assert max(len(line) for line in result.out.splitlines()) <= 80
        frame = requests(data)
        assert frame.height == 14 and frame["warmup"].sum() == 2  # the scenario's 2 warmup requests
        picks.append(frame.sort("request_index")["prompt_index"].to_list())
    assert picks[0] == picks[1] and len(set(picks[0])) > 1


def _read_to_the_end(master: int) -> bytes:
    """What a pseudo-terminal's program wrote, until it closed its side (EIO on Linux)."""
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            return out
        if not data:
            return out
        out += data


def test_a_progress_bar_on_a_terminal_and_none_on_a_pipe_or_with_q(tmp_path: Path) -> None:
    """`pipeline execute` three times at once, as real processes: on a pseudo-terminal (stdout
    and stderr, 100 columns, as a person's), on pipes, and on a terminal with -q."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
        "PYTHONPATH": str(ROOT),
        "TERM": "xterm-256color",
    }
    args = ["execute", "--target", "mock-fast", "--requests", "4", "--seed", "1"]

    def command(name: str, *flags: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", *flags, "--data-dir", str(tmp_path / name), *args]

    terminals = []
    for name, flags in (("tty", ()), ("quiet", ("-q",))):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        proc = subprocess.Popen(
            command(name, *flags), env=env, stdin=slave, stdout=slave, stderr=slave
        )
        os.close(slave)
        terminals.append((proc, master))
    piped = subprocess.run(command("pipe"), env=env, capture_output=True, text=True, timeout=120)
    seen: list[str] = []
    for proc, master in terminals:
        seen.append(_read_to_the_end(master).decode("utf-8", "replace"))
        os.close(master)
        assert proc.wait(timeout=120) == 0, seen[-1]
    tty, tty_q = seen

    assert piped.returncode == 0, piped.stderr
    bar = ("━", "4/4", "\x1b[")  # the bar's line, its count, any terminal control at all
    assert "quickstart × mock-fast" in tty and "\x1b[?25l" in tty  # a live display, drawn
    assert all(part in tty for part in bar)
    assert "events in" in piped.stderr  # what stderr says on a pipe, without the bar
    assert not any(part in piped.stderr for part in bar)
    # -q: no bar and no table (execute changes data: only warnings and errors, as --help says)
    # (a warning may still name the target on a loaded machine: look for the table's own words)
    assert not any(part in tty_q for part in ("━", "4/4", "\x1b[?25l", "times in ms", "ttft p50"))
    assert (tmp_path / "quiet").is_dir()  # and the run happened


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_key_exits_2_before_any_request(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXEC_MISSING_KEY", raising=False)
    cfg = _write(
        tmp_path / "p.toml",
        '[[targets]]\nname = "gpt"\nprovider = "openai"\nmodel = "gpt-4o-mini"\napi_key_env = "EXEC_MISSING_KEY"\n',
    )
    result = cli("--data-dir", str(tmp_path / "data"), "--config", str(cfg), "execute")
    assert result.code == 2
    assert "'gpt'" in result.err and "EXEC_MISSING_KEY" in result.err
    assert not (tmp_path / "data" / "events").exists()


@pytest.fixture
def no_stream_kind() -> Iterator[None]:
    register_provider(ProviderKind("nostream", streaming=False, tools=False, factory=MockProvider))
    yield
    unregister_provider("nostream")


@pytest.mark.usefixtures("no_stream_kind")
def test_capability_mismatch_exits_2_naming_both(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    cfg = _write(
        tmp_path / "p.toml", '[[targets]]\nname = "plain"\nprovider = "nostream"\nmodel = "x"\n'
    )
    result = cli(
        "--data-dir",
        str(tmp_path / "data"),
        "--config",
        str(cfg),
        "execute",
        "--scenario",
        "tool-calling",
    )
    assert result.code == 2 and "'tool-calling'" in result.err and "'plain'" in result.err
    assert "streaming" in result.err
    assert not (tmp_path / "data" / "events").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--scenario", "nope"],
        ["--target", "nope"],
        ["--concurrency", "101"],
        ["--duration", "soon"],
    ],
)
def test_bad_options_exit_2(cli: Callable[..., CliResult], tmp_path: Path, args: list[str]) -> None:
    assert cli("--data-dir", str(tmp_path / "d"), "execute", *args).code == 2


def test_an_unwritable_data_dir_exits_1_with_one_line(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    result = cli("-q", "--data-dir", str(blocker / "data"), "execute", "--requests", "2")
    assert result.code == 1 and result.err.startswith("error: ") and result.err.count("\n") == 1
    assert str(blocker) in result.err and "Not a directory" in result.err
    assert "Traceback" not in result.err


async def test_no_api_key_anywhere_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXEC_TEST_KEY", FAKE_KEY)

    # A server that echoes the key back, in its error body and as its request id.
    said = {"error": {"message": f"Incorrect API key provided: Bearer {FAKE_KEY}"}}
    echo = Canned.whole(401, said, {"x-request-id": FAKE_KEY})

    data = tmp_path / "data"
    async with mock_server(error_injection_rate=0.3, seed=4) as base:
        targets = [
            target(name="real", base_url=base + "/v1"),
            target(name="ant", provider="anthropic", base_url=base, api_key_env="EXEC_TEST_KEY"),
        ]
        loaded = config(targets, [scenario(expected_operations=5, concurrency_level=2)], tmp_path)
        await run(loaded, data)
    async with hostile_server() as (root, server):
        server.script("/v1/chat/completions", echo, echo)
        loaded = config(
            [target(name="echo", base_url=root + "/v1")],
            [scenario(expected_operations=2)],
            tmp_path,
        )
        await run(loaded, data)
    assert [s.headers["authorization"] for s in server.seen] == [f"Bearer {FAKE_KEY}"] * 2
    needle = FAKE_KEY.encode()
    files = [p for p in data.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        assert needle not in path.read_bytes(), path  # raw bytes (metadata, names)
        if path.suffix == ".arrow":  # and every decompressed cell
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            assert FAKE_KEY not in json.dumps(table.to_pylist(), default=str), path
    assert requests(data).filter(target="echo")["error_type"].to_list() == ["client_error"] * 2


async def test_scenario_timeout_ends_the_run_as_timed_out(tmp_path: Path) -> None:
    slow = {"simulated_latency": "2s", "seed": 1}
    loaded = config(
        [{"name": "slow", "provider": "mock", "model": "m", "mock": slow}],
        [scenario(expected_operations=10, concurrency_level=3, timeout_duration="300ms")],
        tmp_path,
    )
    result = await run(loaded, tmp_path / "data")
    assert result.status == "timed_out" and result.exit_code == 4  # nothing came back
    frame = requests(tmp_path / "data")
    assert frame.height == 3 and set(frame["status"]) == {"cancelled"}
    assert set(frame["error_type"]) == {"cancelled"} and "timed out" in frame["error_message"][0]
    finished = runs(tmp_path / "data").filter(kind="finished").to_dicts()
    assert [r["status"] for r in finished] == ["timed_out"]


async def test_open_loop_schedule_and_queueing_are_visible(tmp_path: Path) -> None:
    mock = {"simulated_latency": "100ms", "token_generation_rate": 1000, "seed": 1}
    scn = scenario(
        rate=50.0, arrival="constant", duration="400ms", concurrency_level=2, max_tokens=2
    )
    loaded = config(
        [{"name": "m", "provider": "mock", "model": "m", "mock": mock}], [scn], tmp_path
    )
    await run(loaded, tmp_path / "data", ExecuteOptions(seed=1))
    frame = requests(tmp_path / "data").sort("request_index")
    assert frame.height == 20  # 50/s for 0.4 s
    gaps = frame["scheduled_at"].diff().drop_nulls().dt.total_microseconds()
    assert (gaps == 20_000).all()  # due times are the schedule, not when a slot was free
    longest_queue = frame["queue_us"].max()
    assert isinstance(longest_queue, int)
    assert longest_queue > 200_000  # 2 slots, 100 ms each, 50/s: the queue grows
    (started,) = runs(tmp_path / "data").filter(kind="started").to_dicts()
    assert (
        started["mode"] == "open" and started["rate"] == 50.0 and started["planned_requests"] == 20
    )


def test_arrivals_are_seeded_and_ramp_up() -> None:
    import random

    a = arrival_offsets(10.0, "poisson", duration_s=20.0, rng=random.Random(1))
    assert a == arrival_offsets(10.0, "poisson", duration_s=20.0, rng=random.Random(1))
    assert a != arrival_offsets(10.0, "poisson", duration_s=20.0, rng=random.Random(2))
    assert 120 < len(a) < 280 and a == sorted(a)  # ~200
    ramp = arrival_offsets(10.0, "constant", ramp_up_s=4.0, duration_s=8.0)
    assert len(ramp) == 60  # 10/s × (4/2 + 4)
    assert sum(t < 2.0 for t in ramp) == 5 and sum(6.0 <= t < 8.0 for t in ramp) == 20
    assert arrival_offsets(4.0, "constant", count=3) == [0.0, 0.25, 0.5]


SLOW_CONFIG = """
[[targets]]
name = "slowmock"
provider = "mock"
model = "mock-slow"
mock = { simulated_latency = "3s", token_generation_rate = 10, memory_usage_simulation = 65536 }

[[scenarios]]
name = "slow"
test_prompts = ["Take your time."]
expected_operations = 50
concurrency_level = 4
max_tokens = 20
streaming_required = true
"""


def test_sigterm_mid_run_leaves_a_readable_interrupted_log(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "pipeline.toml", SLOW_CONFIG)
    data = tmp_path / "data"
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-q",
            "--data-dir",
            str(data),
            "--config",
            str(cfg),
            "execute",
            "--scenario",
            "slow",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list((data / "events" / "runs").rglob("*.arrow")):  # the run has started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    finished = runs(data).filter(kind="finished").to_dicts()
    assert [r["status"] for r in finished] == ["interrupted"] and "SIGTERM" in finished[0][
        "message"
    ]
    frame = requests(data)
    assert frame.height == 4  # the 4 in flight, none had finished
    assert set(frame["status"]) == {"cancelled"} and set(frame["error_type"]) == {"cancelled"}
    assert "interrupted (SIGTERM)" in frame["error_message"][0]
    assert not list((data / ".staging").glob("*"))


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler installed for `signum` (Linux: /proc status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("extra_s", [0.0, 0.2])
def test_a_signal_while_the_command_still_starts_is_exit_130(
    tmp_path: Path, signum: int, extra_s: float
) -> None:
    """While the command still loads (imports, config) a signal used to kill the process with a
    traceback or a bare -2/-15; it is the documented 130 and one line. Sent the moment our first
    lines run (they handle SIGTERM: the interpreter never does), and a little later; before that
    instant the interpreter itself is starting, and no program can answer."""
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--data-dir", str(tmp_path / "d"), "execute"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not _catches(proc.pid, signal.SIGTERM):
        assert proc.poll() is None and time.monotonic() < deadline, "never handled the signal"
        time.sleep(0.001)
    time.sleep(extra_s)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
