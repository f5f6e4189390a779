"""Pass-through: an upstream that speaks Anthropic's Messages API itself (`mode = "anthropic"`).

The request goes as the client sent it, with only `model` rewritten by routing; the reply comes
back as the upstream sent it. What the proxy still owes the client is a stream that never ends
looking complete when it was cut: `PassthroughStream` has the `StreamTranslator` interface so
the relay (pings, stall timeout, drain, accounting) treats both modes alike.
"""

from __future__ import annotations

import re
from typing import Any

from . import untrusted
from .errors import BridgeError, UpstreamError, from_stream_error

Event = dict[str, Any]
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def forward_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The client's JSON body (as `validation.parse_object` read it) with the routed model;
    every other field as sent."""
    return {**body, "model": model}


def message_from_upstream(data: Any) -> dict[str, Any]:
    """A 2xx non-streaming answer, as is, once it is known to be a message."""
    if not isinstance(data, dict) or data.get("type") != "message":
        raise UpstreamError("upstream answer is not an Anthropic message", status=502)
    return data


class PassthroughStream:
    def __init__(self) -> None:
        self._done = False

    @property
    def done(self) -> bool:
        """`message_stop` or `error` was relayed: nothing more will be."""
        return self._done

    @property
    def upstream_usage(self) -> dict[str, Any] | None:
        """None: the upstream's usage is in the events relayed, where the relay reads it."""
        return None

    def start(self) -> list[Event]:
        return []  # the upstream sends its own `message_start`

    def feed_data(self, data: str) -> list[Event]:
        if self._done:
            return []
        try:
            event = untrusted.event(data)
        except untrusted.TooDeep as exc:
            return self.fail(UpstreamError(f"upstream sent an event of {exc}", status=502))
        if event is None:
            return []
        kind = event.get("type")
        # The type becomes the SSE `event:` line: a line break in it would forge events.
        if not isinstance(kind, str) or not _EVENT_NAME.fullmatch(kind):
            return []
        if kind == "error":
            error = event.get("error")
            if not (isinstance(error, dict) and isinstance(error.get("type"), str)):
                event = from_stream_error(event).event()  # the SDKs need `error.type`
        if kind in ("message_stop", "error"):
            self._done = True
        return [event]

    def finish(self) -> list[Event]:
        """The upstream body ended; before `message_stop` it was cut off."""
        return self.fail(UpstreamError("upstream stream ended before the reply was complete"))

    def fail(self, error: BridgeError) -> list[Event]:
        if self._done:
            return []
        self._done = True
        return [error.event()]
