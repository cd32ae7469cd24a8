"""Secrets never reach disk or output, whatever a server echoes back.

Canary secrets go in everywhere a user puts one: the API key's variable, a password in the
base URL, a secret header (from its variable), and a plain header whose name says it carries a
credential. A server that repeats the whole request head (in an error body, in its request-id
header, in a stream chunk that is not JSON) then answers every other request. After execute,
aggregate, profile, recommend and report ran as real processes, every byte under the test's
directory, every decompressed cell of every event and output file, and every line the commands
printed are searched for every canary and the forms derived from them.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import trio

from pipeline.store.eventlog import EventLog
from tests.conftest import ROOT, CliResult
from tests.hostile_server import hostile_server

USER, PASSWORD = "bench", "canaryPASSWORD42"
CANARIES = {
    "CANARY_KEY": "ck9Zq-canary-API-KEY-77",
    "CANARY_HDR": "canarySECRETHEADER99",
}
SENSITIVE_HEADER = "canarySENSITIVEHDR13"
FORBIDDEN = (
    *CANARIES.values(),
    SENSITIVE_HEADER,
    PASSWORD,
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
)


def _config(root: str) -> str:
    host = root.removeprefix("http://")
    targets = []
    for name, provider, mode in (
        ("oa-echo", "openai", "echo"),
        ("oa-stream", "openai-compatible", "echo_stream"),
        ("an-echo", "anthropic", "echo"),
    ):
        suffix = "/v1" if provider != "anthropic" else ""
        targets.append(
            f"""
[[targets]]
name = "{name}"
provider = "{provider}"
model = "m"
base_url = "http://{USER}:{PASSWORD}@{host}/{mode}{suffix}"
api_key_env = "CANARY_KEY"
secret_headers = {{ "x-team-token" = "CANARY_HDR" }}
headers = {{ "x-auth-token" = "{SENSITIVE_HEADER}", "x-team" = "bench" }}
"""
        )
    scenario = """
default_scenarios = ["s"]

[[scenarios]]
name = "s"
test_prompts = ["Say hi."]
expected_operations = 4
streaming_required = true
max_tokens = 8
"""
    return scenario + "".join(targets)


def _cells(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _cells(v)]
    if isinstance(value, list):
        return [s for v in value for s in _cells(v)]
    return [str(value)] if value is not None else []


def _table(path: Path) -> pa.Table | None:
    if path.suffix == ".arrow":
        with pa.OSFile(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    if path.suffix == ".parquet":
        return pq.read_table(path)
    return None


def _search(root: Path, skip: Path) -> int:
    """Every byte and every decompressed cell under `root` (but `skip`), for every secret; the
    number of cells searched."""
    checked = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path == skip:
            continue
        raw = path.read_bytes()
        for secret in FORBIDDEN:
            assert secret.encode() not in raw, (path, secret)
        table = _table(path)
        if table is None:
            continue
        for cell in _cells(table.to_pylist()):
            checked += 1
            for secret in FORBIDDEN:
                assert secret not in cell, (path, secret, cell)
    return checked


async def test_canaries_never_reach_a_file_or_a_line_printed(tmp_path: Path) -> None:
    env = {**os.environ, **CANARIES, "PYTHONPATH": str(ROOT)}
    printed: list[str] = []
    async with hostile_server() as (root, server):
        config = tmp_path / "pipeline.toml"
        config.write_text(_config(root))
        data = tmp_path / "data"
        for command in (
            ["execute"],
            ["aggregate"],
            ["profile"],
            ["recommend"],
            ["report", "--out", str(tmp_path / "report.html")],
        ):
            done = await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "--data-dir",
                    str(data),
                    "--config",
                    str(config),
                    *command,
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )
            assert done.returncode == 0, done.stderr.decode()
            printed += [done.stdout.decode(), done.stderr.decode()]
        echoed = sum(n for (mode, _), n in server.requests.items() if mode.startswith("echo"))
    assert echoed == 15  # 12 measured + 1 pre-flight per target reached the echoing server
    for text in printed:
        for secret in FORBIDDEN:
            assert secret not in text
    assert _search(tmp_path, config) > 500


def test_a_secret_cut_by_the_message_limit_is_still_scrubbed() -> None:
    """Scrubbed, then cut: a key across the 200-character limit must not leave its first part."""
    from stages.execute.client.taxonomy import MAX_MESSAGE, scrub

    secret = CANARIES["CANARY_KEY"]
    for start in range(MAX_MESSAGE - len(secret), MAX_MESSAGE + 1):
        message = "malformed JSON in stream: " + "x" * (start - 26) + secret + " tail"
        cleaned = scrub(message, (secret,))
        assert secret[:6] not in cleaned, start
        assert len(cleaned) <= MAX_MESSAGE


def test_a_secret_echoed_json_escaped_or_with_its_spaces_squeezed_is_scrubbed() -> None:
    from stages.execute.client.taxonomy import scrub

    secret = 'tok "with"  two  spaces/and\\slash'
    escaped = '{"auth": "tok \\"with\\"  two  spaces/and\\\\slash"}'
    for message in (secret, f"header: {secret}", escaped, " ".join(secret.split())):
        assert "with" not in scrub(message, (secret,)), message


def test_the_recorded_target_masks_every_auth_like_header_and_keeps_the_rest(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """docs/execute.md: a plain header whose name holds authorization, key, token, secret,
    cookie, auth, password or session is recorded as ***; any other is recorded as it is."""
    masked = {
        "Authorization": "Basic dXNlcjpwYXNz",
        "x-api-key": "k1",
        "x-access-token": "t1",
        "x-client-secret": "s1",
        "cookie": "c=1",
        "proxy-auth": "a1",
        "x-password": "p1",
        "x-session-id": "sess1",
    }
    plain = {"x-team": "bench", "accept-language": "en"}
    headers = ", ".join(f'"{k}" = "{v}"' for k, v in {**masked, **plain}.items())
    config = tmp_path / "headers.toml"
    config.write_text(
        f"""
[[targets]]
name = "m"
provider = "mock"
model = "mock-small"
headers = {{ {headers} }}
"""
    )
    data = tmp_path / "data"
    args = ("-q", "--config", str(config), "--data-dir", str(data), "execute", "--requests", "1")
    assert cli(*args).code == 0
    (started, finished) = (
        EventLog(data).replay("runs").collect().sort("kind", descending=True)["target_config"]
    )
    assert started == finished
    assert json.loads(started)["headers"] == {**dict.fromkeys(masked, "***"), **plain}
    for value in masked.values():
        assert value not in started
