"""llama.cpp's `llama-server` for by-hand checks and the optional `real_server` tests.

Built once per machine by ../shared/real-server/real_server.sh (about 30 minutes, never in CI);
where it is absent, the tests that need it skip with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HOME", "LLAMA_SERVER", "MODEL", "llama_server"]

HOME = Path(os.environ.get("REAL_SERVER_DIR", Path.home() / ".cache" / "real-server"))
LLAMA_SERVER = HOME / "llama.cpp-src" / "build" / "bin" / "llama-server"
MODEL = HOME / "models" / "tiny.gguf"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def llama_server(log: Path, server: Path = LLAMA_SERVER, model: Path = MODEL) -> Iterator[str]:
    """`llama-server` on a free port of 127.0.0.1, as real_server.sh starts it (8 slots, one
    compute thread, the tiny model); yields its base URL, logs to `log`, stops it after."""
    port = _free_port()
    args = [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    args += ["-c", "8192", "--parallel", "8", "--threads", "1", "--threads-batch", "1"]
    args += ["-n", "512", "--jinja", "--alias", "tiny", "--no-webui"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # it listens before the model is loaded (503 until then)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"llama-server did not start; see {log}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
