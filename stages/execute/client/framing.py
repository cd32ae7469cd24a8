"""Splitting a response body into the payloads a provider parses: SSE events or NDJSON lines.

The caller stamps each network read with its arrival before handing it here, so the cost of
parsing never shifts a timing. These framers only split bytes: they do not decode text or JSON,
and they keep a partial line across reads (a chunk boundary can fall anywhere).

Bounded and linear, whatever a server sends: a partial line is kept in a `bytearray` that each
read extends (a line spread over many reads is copied once, not once per read: a 20 MB line in
64 KB reads was quadratic), only the new bytes are searched for the end of the line, and a line
longer than `max_line` or an SSE event longer than `max_event` raises `FrameTooLarge` at once
instead of growing until the request times out.
"""

from __future__ import annotations

from stages.execute.client.taxonomy import ProtocolViolation

__all__ = ["FrameTooLarge", "Framer", "NdjsonFramer", "SseFramer"]


class FrameTooLarge(ProtocolViolation):
    """A line or an event longer than the target's limit (`ResponseLimits`)."""


class Framer:
    """Turns raw reads into complete payloads; `close()` returns what was left unterminated."""

    __slots__ = ("_partial", "max_line")

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._partial = bytearray()
        self.max_line = max_line

    def _lines(self, data: bytes) -> list[bytes]:
        """The complete lines that `data` ends (the first one joined to the kept partial line);
        keeps the rest. Raises `FrameTooLarge` when the partial line outgrows `max_line`."""
        end = data.rfind(b"\n")
        if end < 0:
            self._partial += data
            if len(self._partial) > self.max_line:
                raise FrameTooLarge(f"a line longer than max_line_bytes ({self.max_line})")
            return []
        if self._partial:
            self._partial += data[: end + 1]
            head = bytes(self._partial)
            self._partial = bytearray(data[end + 1 :])
        elif end + 1 == len(data):  # the usual read: whole lines, nothing to keep or copy
            head = data
        else:
            head = data[: end + 1]
            self._partial += data[end + 1 :]
        lines = head.split(b"\n")
        lines.pop()  # the empty string after the last newline
        if len(self._partial) > self.max_line:
            raise FrameTooLarge(f"a line longer than max_line_bytes ({self.max_line})")
        if len(head) > self.max_line and max(map(len, lines)) > self.max_line:
            raise FrameTooLarge(f"a line longer than max_line_bytes ({self.max_line})")
        return lines

    def feed(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    def close(self) -> list[bytes]:
        raise NotImplementedError


class NdjsonFramer(Framer):
    """One JSON document per line (Ollama)."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        return [line for line in self._lines(data) if line.strip()]

    def close(self) -> list[bytes]:
        rest, self._partial = bytes(self._partial), bytearray()
        return [rest] if rest.strip() else []


class SseFramer(Framer):
    """Server-sent events: the `data:` lines of each event, joined; `event:`/`id:`/comments skipped.

    Both OpenAI and Anthropic put the event's type inside its JSON, so the `event:` field is not
    needed. An event is dispatched at its blank line (as the SSE spec says), or at the end of the
    body if a server forgets the last one.
    """

    __slots__ = ("_data", "_size", "max_event")

    def __init__(self, max_line: int = 1 << 20, max_event: int = 4 << 20) -> None:
        super().__init__(max_line)
        self._data: list[bytes] = []
        self._size = 0
        self.max_event = max_event

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pending = self._data
        for line in self._lines(data):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if pending:
                    out.append(pending[0] if len(pending) == 1 else b"\n".join(pending))
                    pending.clear()
                    self._size = 0
            elif line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                self._size += len(value) + 1
                if self._size > self.max_event:
                    raise FrameTooLarge(f"an event longer than max_event_bytes ({self.max_event})")
                pending.append(value)
        return out

    def close(self) -> list[bytes]:
        out = self.feed(b"\n\n") if self._partial else []
        if self._data:
            out.append(b"\n".join(self._data))
            self._data.clear()
            self._size = 0
        return out
