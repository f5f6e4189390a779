"""Server-sent events: an incremental decoder for upstream bytes, an encoder for Anthropic's.

The decoder works on bytes and splits lines only at CR and LF bytes, which never occur inside
a UTF-8 multibyte sequence, so a chunk may end anywhere. Lines are decoded to text one by one,
never the buffer as a whole: `str.splitlines` would also break at U+2028 and friends, which JSON
strings may carry raw.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson


class SSEEvent(NamedTuple):
    """One event; a tuple because one is made for every streamed chunk (a third of a frozen
    dataclass's cost to build)."""

    event: str | None
    data: str


class SSEDecoder:
    """`decode(chunk)` as bytes arrive, `flush()` once at end of input."""

    __slots__ = ("_data", "_event", "_partial", "_skip_lf")

    def __init__(self) -> None:
        self._partial = bytearray()
        # The last chunk ended in CR: an LF opening the next one belongs to the same line end.
        self._skip_lf = False
        self._data: list[str] = []
        self._event: str | None = None

    def decode(self, chunk: bytes) -> list[SSEEvent]:
        # Most reads are one whole `data:` event, nothing pending: taken in one step (a third
        # of the general path's time, on every streamed chunk).
        if (
            chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and chunk.count(b"\n") == 2
            and not self._partial
            and not self._data
            and not self._skip_lf
            and self._event is None
            and b"\r" not in chunk
        ):
            return [SSEEvent(None, chunk[6:-2].decode("utf-8", "replace"))]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:
            self._partial += chunk
            return []
        if self._partial:
            self._partial += chunk
            buffer = bytes(self._partial)
            self._partial.clear()
        else:
            buffer = chunk
        lines = buffer.splitlines()
        last = buffer[-1]
        if last == 0x0D:
            self._skip_lf = True
        elif last != 0x0A:
            self._partial += lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[SSEEvent]:
        """The input ended. Unlike a browser, dispatch an event whose blank line never came:
        upstreams that drop the connection right after `data: [DONE]` still finished."""
        events: list[SSEEvent] = []
        if self._partial:
            self._line(bytes(self._partial), events)
            self._partial.clear()
        self._line(b"", events)
        self._skip_lf = False
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
                events.append(SSEEvent(self._event, data))
                self._data = []
            self._event = None
            return
        if line[0] == 0x3A:  # ":" comment, e.g. OpenRouter's ": OPENROUTER PROCESSING"
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")


# The head of each event Anthropic's streams have, made once (others are made as they come).
_HEADS = {
    name: b"event: " + name.encode() + b"\ndata: "
    for name in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    )
}

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# Lone surrogates (from a `\ud83d` escape cut off upstream) have no UTF-8 form; escaped they do.
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_event(event: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: named after its type, compact JSON, ended by a blank line.

    orjson writes what Python's encoder writes (compact, UTF-8, the same escapes) in a fifth of
    the time; what it refuses (lone surrogates, integers past 64 bits, keys that are not
    strings) takes Python's encoders, as before."""
    try:
        data = orjson.dumps(event)
    except TypeError:
        try:
            data = _ENCODER.encode(event).encode()
        except UnicodeEncodeError:
            data = _ASCII_ENCODER.encode(event).encode()
    name: str = event["type"]
    head = _HEADS.get(name) or b"event: " + name.encode() + b"\ndata: "
    return b"".join((head, data, b"\n\n"))
