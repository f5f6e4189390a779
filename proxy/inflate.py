"""Content-encoded upstream bodies, inflated in bounded steps.

httpx's decoders inflate each piece they are given whole: 381 KB of gzip arriving at once
became 128 MB in one call, in memory, with the event loop held. Here every step gives at most
`PIECE` bytes, so the limits the proxy sets on plain bodies (the JSON body limit, the size of
one event, the relay's read-ahead) count inflated bytes and hold before the memory is spent;
and a body that inflates more than `MAX_RATIO` times its size is refused as a compression bomb.

Supported: what the proxy asks for (`accept-encoding: gzip, deflate`), layered in any order.
brotli and zstd are not in the standard library; an upstream that sends them (or anything else)
unasked is refused before its body is read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

# The most one step inflates: translating this much takes a few milliseconds.
PIECE = 16 * 1024
# gzip reaches ~1000:1 on repeated bytes; event streams compress 15:1 when a gateway flushes
# each event, ~40:1 when it does not. Apache POI refuses zip entries past 100:1 too.
MAX_RATIO = 100
# Below this many inflated bytes the ratio is not judged: small bodies of repeated text (an
# answer of "aaaa...", a tool writing a file of zeros) are legitimately that compressible. Past
# it, a JSON answer is bigger than any model writes (128k tokens of text are ~0.5 MB), and a
# stream's events compress far less than 100:1.
GRACE = 1024 * 1024
_STEP = 4096  # compressed bytes inflated at a time
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class InflateError(ValueError):
    """The body is not what its `content-encoding` says, or inflates like a bomb; the message
    names the body ("gzip body that is corrupt (...)"), for "upstream X sent a ..."."""


def codings(header: str | None) -> list[str]:
    """The codings of a `content-encoding` header, in the order they were applied."""
    names = (name.strip().lower() for name in (header or "").split(","))
    return [name for name in names if name and name != "identity"]


def unsupported(header: str | None) -> str | None:
    """The first coding of `header` this module cannot undo; None when it can undo them all."""
    return next((name for name in codings(header) if name not in _WBITS), None)


class Inflater:
    """`feed(raw)` as compressed bytes arrive, then `flush()`: inflated pieces of at most
    `PIECE` bytes each (the consumer's limits apply between pieces)."""

    def __init__(self, header: str | None) -> None:
        names = codings(header)
        if unsupported(header) is not None:
            raise InflateError(f"body in content-encoding {header!r}, which is not supported")
        # The last coding applied is the first undone.
        self._layers = [_Layer(name) for name in reversed(names)]
        self._in = 0
        self._out = 0

    def feed(self, raw: bytes) -> Iterator[bytes]:
        return self._counted(self._stepped(raw))

    def flush(self) -> Iterator[bytes]:
        return self._counted(self._through([], flushing=True))

    def _stepped(self, raw: bytes) -> Iterator[bytes]:
        # A little input at a time, so that the ratio compares what came out with what went
        # in (a 256 KiB piece could otherwise inflate to 25 MiB before it counted as a bomb).
        for start in range(0, len(raw), _STEP):
            part = raw[start : start + _STEP]
            self._in += len(part)
            yield from self._through([part], flushing=False)

    def _through(self, pieces: Iterable[bytes], *, flushing: bool) -> Iterable[bytes]:
        for layer in self._layers:
            pieces = layer.run(pieces, flushing)
        return pieces

    def _counted(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self._out += len(piece)
            if self._out > GRACE and self._out > MAX_RATIO * self._in:
                raise InflateError(
                    f"body that inflates more than {MAX_RATIO} times its size, refused as a "
                    "compression bomb"
                )
            yield piece


class _Layer:
    """One gzip or deflate coding, undone `PIECE` bytes at a time."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._wbits = _WBITS[name]
        self._inflate = zlib.decompressobj(self._wbits)
        self._started = False  # some output came: no more falling back to raw deflate

    def run(self, pieces: Iterable[bytes], flushing: bool) -> Iterator[bytes]:
        for piece in pieces:
            yield from self._feed(piece)
        if flushing:
            yield from self._feed(b"")
            try:
                rest = self._inflate.flush()
            except zlib.error as exc:
                raise InflateError(f"{self._name} body that is corrupt ({exc})") from None
            if rest:
                yield rest

    def _feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            try:
                out = self._inflate.decompress(data, PIECE)
            except zlib.error as exc:
                if self._name == "deflate" and not self._started and self._wbits > 0:
                    # Servers send raw deflate under this name too (as httpx also accepts).
                    self._wbits = -zlib.MAX_WBITS
                    self._inflate = zlib.decompressobj(self._wbits)
                    continue
                raise InflateError(f"{self._name} body that is corrupt ({exc})") from None
            self._started = self._started or bool(out)
            data = self._inflate.unconsumed_tail
            if self._inflate.eof:
                trailing = self._inflate.unused_data
                if not trailing or self._wbits == zlib.MAX_WBITS or self._wbits < 0:
                    data = b""  # bytes after a deflate stream: ignored, as httpx does
                else:
                    # Another gzip member follows (gateways that compress each flush apart).
                    self._inflate = zlib.decompressobj(self._wbits)
                    data = trailing
            if out:
                yield out
            if not data and len(out) < PIECE:
                return
