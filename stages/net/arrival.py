"""When bytes arrived: the instant trio's I/O wait saw them, not when a task got round to them.

Why: in one trio loop, the tasks woken by one I/O wait run one after another. A timestamp taken
when each task runs charges every stream for the work done on the streams woken before it: at 16
streams whose first tokens arrive within a millisecond, the last one is stamped several
milliseconds late, and a benchmark client reports its own queue as the server's latency
(docs/accuracy.md measured this). The bytes were in the socket when the I/O wait returned, so a
trio instrument records that instant (`ArrivalClock.io_ns`), and `receive` stamps a read that had
to wait with it: its first bytes were there by then (bytes that came in the moment between are
read with them and share the stamp, as bytes of one read always do). A read that found data
without waiting is stamped when it ran, as before: the bytes came some time earlier.

The client's HTTP backend (`stages/execute/client/transport/backend.py`) stamps every response
read this way, and the mock server starts a request's clock when its bytes arrived
(`stages/mock/http/connection.py`).
"""

from __future__ import annotations

import os
from time import perf_counter_ns
from typing import TypeGuard

import trio

__all__ = ["ArrivalClock", "arrival_clock", "receive", "is_plain_socket"]

_CLOCK: trio.lowlevel.RunVar[ArrivalClock] = trio.lowlevel.RunVar("arrival_clock")


class ArrivalClock(trio.abc.Instrument):
    """`io_ns`: `perf_counter_ns()` when this trio run's last I/O wait returned."""

    def __init__(self) -> None:
        self.io_ns = perf_counter_ns()

    def after_io_wait(self, timeout: float) -> None:
        self.io_ns = perf_counter_ns()


def arrival_clock() -> ArrivalClock:
    """The running trio loop's clock, installed on first use (one per run)."""
    try:
        return _CLOCK.get()
    except LookupError:
        clock = ArrivalClock()
        trio.lowlevel.add_instrument(clock)
        _CLOCK.set(clock)
        return clock


def is_plain_socket(stream: object) -> TypeGuard[trio.SocketStream]:
    """Whether this is a plain TCP or Unix socket stream on a POSIX system, whose descriptor can
    be read (`receive`) and written directly; not TLS, where the bytes read are not the bytes
    that arrived."""
    return os.name == "posix" and isinstance(stream, trio.SocketStream)


async def receive(
    sock: trio.socket.SocketType, max_bytes: int, clock: ArrivalClock
) -> tuple[bytes, int]:
    """Read up to `max_bytes` from a non-blocking socket: (the bytes, when they arrived).

    A checkpoint, like `SocketStream.receive_some`, with its errors: `ClosedResourceError` when
    the socket was closed, `BrokenResourceError` for any other failure; b"" at end of stream."""
    await trio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        try:
            data = os.read(fd, max_bytes)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            waited = True
            continue
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc
        if waited:
            return data, clock.io_ns  # the wait that woke this task is the loop's last one
        now = perf_counter_ns()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data, now
