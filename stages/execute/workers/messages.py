"""What the parent and its worker processes say to each other over their pipes, as types.

    parent → worker   Go(phase, start_ns)      start a phase ("warmup" | "measured") at start_ns
                      Halt(reason)             a signal's name, "timeout", or why the pair fails
    worker → parent   Ready()                  imports done, client built
                      Progress(delta)          counts since the last report (the progress bar)
                      PhaseDone(phase)         the warmup finished in this worker
                      Done(report)             the closing numbers; events already flushed
                      Failed(message)          the worker raised; it exits 1

Each is a frozen dataclass pickled across the pipe (`multiprocessing.Connection`), so a reader
matches on the type, never on a string tag or a tuple position. `receive` reads one message
without blocking the trio loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

import trio

from stages.execute.record.summary import StatsDelta

__all__ = [
    "Barrier",
    "Done",
    "Failed",
    "FromWorker",
    "Go",
    "Halt",
    "Phase",
    "PhaseDone",
    "Progress",
    "Ready",
    "ToWorker",
    "WorkerReport",
    "receive",
]

Phase = Literal["warmup", "measured"]


class Barrier(enum.Enum):
    """A point every worker must reach before the parent goes on."""

    READY = "ready"
    WARMUP = "warmup"
    DONE = "done"


@dataclass(frozen=True)
class WorkerReport:
    """A worker's closing numbers; its requests and samples are already in the event log."""

    sent: int
    peak_rss: int
    cpu: list[tuple[int, int]]
    lags: list[int]
    stats: StatsDelta
    """The counts since its last `Progress`."""


@dataclass(frozen=True)
class Go:
    phase: Phase
    start_ns: int
    """`perf_counter_ns` of the shared start (the system-wide monotonic clock)."""


@dataclass(frozen=True)
class Halt:
    reason: str
    """A signal's name (the run is interrupted), "timeout" (the pair timed out), or else why
    the pair fails (another worker failed)."""

    @property
    def timed_out(self) -> bool:
        return self.reason == "timeout"


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Progress:
    delta: StatsDelta


@dataclass(frozen=True)
class PhaseDone:
    phase: Phase


@dataclass(frozen=True)
class Done:
    report: WorkerReport


@dataclass(frozen=True)
class Failed:
    message: str


ToWorker = Go | Halt
FromWorker = Ready | Progress | PhaseDone | Done | Failed
_KNOWN = (Go, Halt, Ready, Progress, PhaseDone, Done, Failed)


async def receive(conn: Connection) -> ToWorker | FromWorker | None:
    """The next message on a pipe without blocking the loop; None when the other end closed."""
    await trio.lowlevel.wait_readable(conn.fileno())
    try:
        message: object = conn.recv()
    except (EOFError, OSError):
        return None
    if not isinstance(message, _KNOWN):
        raise TypeError(f"not a worker message: {message!r:.80}")
    return message
