"""A local S3 for the tests and the bench: moto's server on 127.0.0.1, in its own process.

Usage: python -m tests.s3_server [--port N]   prints "listening on http://127.0.0.1:PORT"

Two things are added in front of moto's WSGI app, both because the tests need S3's own
promises, not moto's:

* Writes are serialised. Real S3 decides a conditional PUT (`If-None-Match: *`, `If-Match`)
  atomically; moto 5.2 checks the condition and then stores the object in two steps, without a
  lock, on a threaded server, so two racing create-only PUTs could both succeed there. One lock
  around every PUT, POST and DELETE gives back the atomicity S3 documents (reads stay parallel).
* `POST /_faults/conflicts?count=N` makes the next N conditional PUTs answer 409
  ConditionalRequestConflict, which S3 returns when two conditional writes to one key overlap
  and which moto never does; so the retry of a 409 is tested against a real HTTP answer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

_CONFLICT = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
    b"<Message>A conflicting operation occurred. Retry the request.</Message></Error>"
)
Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]


class Guard:
    """The WSGI app in front of moto's (module docstring)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.writes = threading.Lock()
        self.conflicts = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if environ.get("PATH_INFO") == "/_faults/conflicts" and method == "POST":
            query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if p)
            self.conflicts = int(query.get("count", "1"))
            start_response("204 No Content", [])
            return [b""]
        if method not in ("PUT", "POST", "DELETE"):
            return self.app(environ, start_response)
        with self.writes:
            conditional = "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
            if method == "PUT" and conditional and self.conflicts > 0:
                self.conflicts -= 1
                get_input_stream(environ).read()  # bounded by Content-Length
                start_response("409 Conflict", [("Content-Type", "application/xml")])
                return [_CONFLICT]
            # Consumed inside the lock: moto stores the object while the body is iterated.
            return list(self.app(environ, start_response))


def spawn(cwd: str) -> tuple[subprocess.Popen[str], str]:
    """This server in a process of its own (run from `cwd`, the repository root): the process
    and its endpoint URL, once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.s3_server"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": cwd},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"the local S3 did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    app = Guard(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    sys.stdout.write(f"listening on http://127.0.0.1:{server.server_port}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
