"""Pass-through: an upstream that speaks Anthropic's Messages API itself (`mode = "anthropic"`).

The request goes as the client sent it, with only `model` rewritten by routing; the reply comes
back as the upstream sent it. What the proxy still owes the client is a stream that never ends
looking complete when it was cut: `PassthroughStream` has the `StreamTranslator` interface so
the relay (pings, stall timeout, drain, accounting) treats both modes alike.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BridgeError, UpstreamError

Event = dict[str, Any]


def forward_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The client's JSON body (as `validation.parse_object` read it) with the routed model;
    every other field as sent."""
    return {**body, "model": model}


def message_from_upstream(data: Any) -> dict[str, Any]:
    """A 2xx non-streaming answer, as is, once it is known to be a message."""
    if not isinstance(data, dict) or data.get("type") != "message":
        raise UpstreamError("upstream answer is not an Anthropic message", status=500)
    return data


class PassthroughStream:
    def __init__(self) -> None:
        self._done = False

    @property
    def done(self) -> bool:
        """`message_stop` or `error` was relayed: nothing more will be."""
        return self._done

    def start(self) -> list[Event]:
        return []  # the upstream sends its own `message_start`

    def feed_data(self, data: str) -> list[Event]:
        if self._done:
            return []
        try:
            event = json.loads(data)
        except ValueError:
            return []  # what the translator does with a garbled line: skip it
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return []
        if event["type"] in ("message_stop", "error"):
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
