"""Our client against a real llama.cpp `llama-server`, beside the server's own log.

    python bench/real_server.py [--server PATH] [--model PATH] [--requests 120] [--levels 1,4,8]

Starts `llama-server` (built by ../shared/real-server/real_server.sh install: by default under
~/.cache/real-server) on a free port with the settings that script uses, runs a streamed closed
loop at each concurrency level through `pipeline execute`'s own code, and prints one row per
level: our errors, resends (`reconnects`), TTFT p50, mean inter-token gap, end-to-end p50 and
tokens per request, next to what the server logged for the same requests (prompt time, time per
decoded token, total time, tokens). The server's times start when it began the prompt, ours when
the request went out, so ours include the network and the HTTP parsing on both sides.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from pipeline.config import parse_config  # noqa: E402
from pipeline.store.eventlog import EventLog  # noqa: E402
from stages.execute.load.plan import ExecuteOptions  # noqa: E402
from stages.execute.session import execute  # noqa: E402
from tests.real_server import LLAMA_SERVER, MODEL, llama_server  # noqa: E402

_PROMPT = re.compile(r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
_EVAL = re.compile(r"\s eval time =\s+([\d.]+) ms /\s+(\d+) tokens \(\s*([\d.]+) ms per token")
_TOTAL = re.compile(r"total time =\s+([\d.]+) ms /\s+(\d+) tokens")


def _server_side(text: str) -> dict[str, float]:
    prompt = [float(m.group(1)) for m in _PROMPT.finditer(text)]
    per_token = [float(m.group(3)) for m in _EVAL.finditer(text)]
    total = [float(m.group(1)) for m in _TOTAL.finditer(text)]
    decoded = [int(m.group(2)) for m in _EVAL.finditer(text)]
    return {
        "requests": len(total),
        "prompt_ms": median(prompt) if prompt else float("nan"),
        "ms_per_token": mean(per_token) if per_token else float("nan"),
        "total_ms": median(total) if total else float("nan"),
        "tokens": mean(decoded) if decoded else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, default=LLAMA_SERVER)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--levels", default="1,4,8")
    args = parser.parse_args()
    if not args.server.is_file():
        raise SystemExit(f"no llama-server at {args.server}: run real_server.sh install first")
    work = Path(tempfile.mkdtemp(prefix="real-server-bench-"))
    log = work / "llama-server.log"
    rows: list[dict[str, Any]] = []
    with llama_server(log, args.server, args.model) as base:
        for level in (int(x) for x in args.levels.split(",")):
            raw = {
                "targets": [
                    {
                        "name": "llama",
                        "provider": "openai-compatible",
                        "model": "tiny",
                        "base_url": f"{base}/v1",
                    }
                ],
                "scenarios": [
                    {
                        "name": "chat",
                        "test_prompts": ["Write a short story about a robot who learns to paint."],
                        "expected_operations": args.requests,
                        "concurrency_level": level,
                        "streaming_required": True,
                        "max_tokens": args.max_tokens,
                    }
                ],
                "default_scenarios": ["chat"],
            }
            data = work / f"data-{level}"
            seen = log.stat().st_size
            result = execute(parse_config(raw, "bench", work), data, ExecuteOptions(seed=1))
            time.sleep(0.2)  # the server writes its last timing lines after the last response
            with open(log, encoding="utf-8", errors="replace") as handle:
                handle.seek(seen)
                server = _server_side(handle.read())
            frame = EventLog(data).replay("requests").collect()
            ok = frame.filter(pl.col("status") == "ok")
            stats = ok.select(
                (pl.col("ttft_us").median() / 1000).alias("ttft_p50"),
                (
                    pl.col("chunk_offsets_us").list.diff(null_behavior="drop").explode().mean()
                    / 1000
                ).alias("itl_mean"),
                (pl.col("latency_us").median() / 1000).alias("e2e_p50"),
                pl.col("output_tokens").mean().alias("tokens"),
            ).row(0, named=True)
            rows.append(
                {
                    "c": level,
                    "run": result.run_id,
                    "sent": frame.height,
                    "errors": frame.height - ok.height,
                    "resent": frame.select(pl.col("reconnects").sum()).item(),
                    **stats,
                    **{f"srv_{k}": v for k, v in server.items()},
                }
            )
    print(f"llama-server {args.server} (log {log}); {args.requests} streamed requests per level")
    header = (
        "| c | sent | errors | resent | TTFT p50 ms | ITL mean ms | E2E p50 ms | tokens |"
        " server: requests | prompt p50 ms | ms/token | total p50 ms | tokens |"
    )
    print(header)
    print("|---:" * 13 + "|")
    for r in rows:
        print(
            f"| {r['c']} | {r['sent']} | {r['errors']} | {r['resent']} | {r['ttft_p50']:.1f} |"
            f" {r['itl_mean']:.2f} | {r['e2e_p50']:.1f} | {r['tokens']:.1f} |"
            f" {r['srv_requests']} | {r['srv_prompt_ms']:.1f} | {r['srv_ms_per_token']:.2f} |"
            f" {r['srv_total_ms']:.1f} | {r['srv_tokens']:.1f} |"
        )


if __name__ == "__main__":
    main()
