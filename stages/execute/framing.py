"""Splitting a response body into the payloads a provider parses: SSE events or NDJSON lines.

The caller stamps each network read with `time.perf_counter_ns()` before handing it here, so the
cost of parsing never shifts a timing. These framers only split bytes: they do not decode text or
JSON, and they keep a partial line across reads (a chunk boundary can fall anywhere).
"""

from __future__ import annotations

__all__ = ["Framer", "NdjsonFramer", "SseFramer"]


class Framer:
    """Turns raw reads into complete payloads; `close()` returns what was left unterminated."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    def close(self) -> list[bytes]:
        raise NotImplementedError


class NdjsonFramer(Framer):
    """One JSON document per line (Ollama)."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\n" not in buffer:
            self._buffer = buffer
            return []
        *lines, self._buffer = buffer.split(b"\n")
        return [line for line in lines if line.strip()]

    def close(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [rest] if rest.strip() else []


class SseFramer(Framer):
    """Server-sent events: the `data:` lines of each event, joined; `event:`/`id:`/comments skipped.

    Both OpenAI and Anthropic put the event's type inside its JSON, so the `event:` field is not
    needed. An event is dispatched at its blank line (as the SSE spec says), or at the end of the
    body if a server forgets the last one.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        super().__init__()
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\n" not in buffer:
            self._buffer = buffer
            return []
        *lines, self._buffer = buffer.split(b"\n")
        out: list[bytes] = []
        pending = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if pending:
                    out.append(pending[0] if len(pending) == 1 else b"\n".join(pending))
                    pending.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                pending.append(value[1:] if value.startswith(b" ") else value)
        return out

    def close(self) -> list[bytes]:
        out = self.feed(b"\n\n") if self._buffer else []
        if self._data:
            out.append(b"\n".join(self._data))
            self._data.clear()
        return out
