"""The interface the relay drives, and what every translating stream shares.

`EventSource` turns an upstream's SSE `data` fields into the client's Anthropic events:
`start()` once the upstream answered 2xx, `feed_data` per field, `finish()` at the end of the
body, `fail(error)` when it broke. After `message_stop` or `error` (`done`) all return nothing.

`FieldReader` reads each field as untrusted JSON, for every source (`passthrough.PassthroughStream`
included). `Translator` is the part the translating dialects' state machines
(`stream.StreamTranslator`, `responses.stream.ResponsesStreamTranslator`) have in common: the
opening `message_start`, the endings (`message_stop`, or an `error`), the output estimate and the
upstream's usage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

from . import untrusted
from .context import ReplyContext, message_start
from .errors import BridgeError, UpstreamError
from .usage import anthropic_usage

Event = dict[str, Any]


class EventSource(Protocol):
    """A translator, or `passthrough.PassthroughStream` for upstreams that speak Anthropic."""

    @property
    def done(self) -> bool: ...
    @property
    def upstream_usage(self) -> dict[str, Any] | None: ...
    def start(self) -> list[Event]: ...
    def feed_data(self, data: str) -> list[Event]: ...
    def finish(self) -> list[Event]: ...
    def fail(self, error: BridgeError) -> list[Event]: ...


class FieldReader(ABC):
    """An `EventSource`'s reading of one upstream SSE `data` field: a JSON object goes to
    `feed`; anything else (a keep-alive) is skipped; JSON nested past reason ends the stream."""

    unit = "an event"
    """What one upstream SSE `data` field is called in error messages."""

    @property
    @abstractmethod
    def done(self) -> bool: ...

    def feed_data(self, data: str) -> list[Event]:
        if self.done:
            return []
        try:
            event = untrusted.event(data)
        except untrusted.TooDeep as exc:
            return self.fail(UpstreamError(f"upstream sent {self.unit} of {exc}", status=502))
        return [] if event is None else self.feed(event)

    @abstractmethod
    def feed(self, event: dict[str, Any]) -> list[Event]: ...

    @abstractmethod
    def fail(self, error: BridgeError) -> list[Event]: ...


class Translator(FieldReader):
    def __init__(self, ctx: ReplyContext) -> None:
        self._ctx = ctx
        self._started = False
        self._done = False
        self._usage: dict[str, Any] | None = None
        self._chars = 0  # of output produced, for the estimate

    @property
    def started(self) -> bool:
        return self._started

    @property
    def done(self) -> bool:
        """`message_stop` or `error` was emitted: nothing more will be."""
        return self._done

    @property
    def output_estimate(self) -> int:
        """Output tokens guessed from the characters produced, for upstreams without usage."""
        return (self._chars + 3) // 4

    @property
    def upstream_usage(self) -> dict[str, Any] | None:
        """The upstream's own usage, in Chat Completions' shape (its reasoning tokens, cost)."""
        return self._usage

    def start(self) -> list[Event]:
        return self._out(self._start())

    @abstractmethod
    def finish(self) -> list[Event]: ...

    def fail(self, error: BridgeError) -> list[Event]:
        if self._done:
            return []
        return self._out(self._fail(error))

    def _out(self, events: list[Event]) -> list[Event]:
        """What goes to the client of the events made: all of them, unless a subclass holds
        some back."""
        return events

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return message_start(self._ctx)

    def _fail(self, error: BridgeError) -> list[Event]:
        out = self._start()
        self._done = True
        out.append(error.event())
        return out

    def _stop(self, reason: str, sequence: str | None) -> list[Event]:
        """The normal ending: the stop reason and usage, then `message_stop`."""
        self._done = True
        usage = anthropic_usage(self._usage, self._ctx, self.output_estimate)
        return [
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage,
            },
            {"type": "message_stop"},
        ]


def block_delta(index: int, delta: dict[str, Any]) -> Event:
    return {"type": "content_block_delta", "index": index, "delta": delta}
