"""Recognising a stream's next content chunk without parsing it as JSON, where that is provably safe.

A server streams one envelope per token: the same bytes around a different piece of text
(`{"id":"c1",...,"delta":{"content":"<text>"},...}`). After a payload has been parsed with
`json.loads` and found to be a plain content chunk, `ContentTemplate.learn` keeps the bytes
before and after the text's JSON string. A later payload that is exactly those bytes around a
non-empty run of bytes with no `"`, no `\\` and no control character, valid UTF-8, is the same
JSON document with only that string changed, so parsing it would take the same decisions: a
content chunk of `len(text)` characters. Anything else (an escape, a usage or finish chunk, a
changed id, invalid UTF-8) does not match and is parsed as before.

Why the string found is the content field: `learn` requires a payload without any backslash
(so every key is written literally and every `"` delimits a string) in which `"<key>"` occurs
exactly once, immediately followed by `:"`; in valid JSON a `"` followed by a letter opens a
string, so that occurrence is the key, and the string after it is its value, compared with the
value the parse gave. Measured: ~1 µs per matched chunk instead of ~8 µs.
"""

from __future__ import annotations

import re

__all__ = ["ContentTemplate"]

_UNSAFE = re.compile(rb'["\\\x00-\x1f]')
"""Bytes that would end the string, start an escape, or make it invalid JSON (strict)."""


class ContentTemplate:
    """The bytes around one content string of a stream's envelope."""

    __slots__ = ("_fixed", "head", "tail")

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head = head
        self.tail = tail
        self._fixed = len(head) + len(tail)

    @classmethod
    def learn(cls, payload: bytes, key: bytes, text: str) -> ContentTemplate | None:
        """The template of `payload`, whose parse gave `text` (non-empty) under `key`, if safe."""
        if b"\\" in payload or payload.count(b'"' + key + b'"') != 1:
            return None
        marker = b'"' + key + b'":"'
        start = payload.find(marker)
        if start < 0:
            return None
        start += len(marker)
        end = payload.find(b'"', start)
        if end <= start or payload[start:end] != text.encode():
            return None
        return cls(payload[:start], payload[end:])

    def match(self, payload: bytes) -> int:
        """The characters of the content `payload` carries in this envelope, or -1 if it is not."""
        if len(payload) <= self._fixed:
            return -1
        if not (payload.startswith(self.head) and payload.endswith(self.tail)):
            return -1
        text = payload[len(self.head) : len(payload) - len(self.tail)]
        if _UNSAFE.search(text) is not None:
            return -1
        try:
            return len(text.decode())
        except UnicodeDecodeError:
            return -1
