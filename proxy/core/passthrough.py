"""Pass-through: an upstream that speaks Anthropic's Messages API itself (`mode = "anthropic"`).

The request goes as the client sent it, with `model` rewritten by routing and, for servers that
refuse some of what Claude Code sends, those fields and betas left out (`passthrough_profiles`);
the reply comes back as the upstream sent it. What the proxy still owes the client is a stream
that never ends looking complete when it was cut: `PassthroughStream` has the
`StreamTranslator` interface so the relay (pings, stall timeout, drain, accounting) treats both
modes alike.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from .errors import BridgeError, UpstreamError, from_stream_error
from .passthrough_profiles import GENERIC, Drop, PassthroughProfile
from .request import BILLING_HEADER_PREFIX
from .source import Event, FieldReader

_EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def forward_body(
    body: dict[str, Any], model: str, profile: PassthroughProfile = GENERIC
) -> tuple[dict[str, Any], list[str]]:
    """The client's JSON body (as `validation.parse_object` read it) with the routed model and
    what `profile` spares its server left out, and what that was (for the exchange's notes);
    every other field as sent, in its order. The client's dicts are copied where they change,
    never modified."""
    dropped: list[str] = []
    for drop in profile.drops:
        if _holds(body, drop):
            body, changed = _without(body, drop.segments)
            if changed:
                dropped.append(drop.path)
    if not profile.schemaless_tools:
        body = _without_schemaless_tools(body, dropped)
    if not profile.billing_header:
        body = _without_billing_header(body, dropped)
    if not profile.system_messages:
        body = _system_messages_as_user(body, dropped)
    return {**body, "model": model}, dropped


def forward_headers(headers: Mapping[str, str], profile: PassthroughProfile) -> dict[str, str]:
    """The client's forwarded headers with the betas `profile` leaves out taken from
    `anthropic-beta` (the header goes when none is left)."""
    kept = dict(headers)
    value = kept.pop("anthropic-beta", None)
    if value is None or not profile.betas:
        return {**headers}
    betas = [b.strip() for b in value.split(",") if b.strip()]
    left = [b for b in betas if not any(fnmatch.fnmatchcase(b.lower(), p) for p in profile.betas)]
    if left:
        kept["anthropic-beta"] = ",".join(left)
    return kept


def _holds(body: dict[str, Any], drop: Drop) -> bool:
    if drop.when is None:
        return True
    path, value = drop.when
    node: Any = body
    for key in path.split("."):
        if not isinstance(node, dict):
            return False
        node = node.get(key)
    return bool(node == value)


def _without(node: Any, segments: tuple[str, ...]) -> tuple[Any, bool]:
    """`node` with the field at `segments` removed (`name[]` walks every element of a list),
    copied along the way; and whether there was one."""
    head, rest = segments[0], segments[1:]
    each = head.endswith("[]")
    key = head.removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return node, False
    if not rest:
        return {k: v for k, v in node.items() if k != key}, True
    child = node[key]
    if each and isinstance(child, list):
        results = [_without(item, rest) for item in child]
        changed = any(c for _, c in results)
        new_child: Any = [item for item, _ in results]
    else:
        new_child, changed = (child, False) if each else _without(child, rest)
    return ({**node, key: new_child}, True) if changed else (node, False)


def _without_schemaless_tools(body: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """Tools without an `input_schema` (Anthropic's server tools) left out, with a
    `tool_choice` naming one of them; no `tools` at all when none is left."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return body
    kept = [t for t in tools if not isinstance(t, dict) or "input_schema" in t]
    if len(kept) == len(tools):
        return body
    gone = {t.get("name") for t in tools if isinstance(t, dict) and "input_schema" not in t}
    dropped.extend(f"tool {name}" for name in sorted(str(n) for n in gone))
    body = {**body, "tools": kept}
    choice = body.get("tool_choice")
    if not kept or (isinstance(choice, dict) and choice.get("name") in gone):
        body.pop("tool_choice", None)
    if not kept:
        body.pop("tools")
    return body


def _without_billing_header(body: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    system = body.get("system")
    if not isinstance(system, list):
        return body
    kept = [
        b
        for b in system
        if not (isinstance(b, dict) and str(b.get("text", "")).startswith(BILLING_HEADER_PREFIX))
    ]
    if len(kept) == len(system):
        return body
    dropped.append("system billing header")
    return {**body, "system": kept} if kept else {k: v for k, v in body.items() if k != "system"}


def _system_messages_as_user(body: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        return body
    dropped.append("system role (sent as user)")
    return {
        **body,
        "messages": [
            {**m, "role": "user"} if isinstance(m, dict) and m.get("role") == "system" else m
            for m in messages
        ],
    }


def message_from_upstream(data: Any) -> dict[str, Any]:
    """A 2xx non-streaming answer, as is, once it is known to be a message."""
    if not isinstance(data, dict) or data.get("type") != "message":
        raise UpstreamError("upstream answer is not an Anthropic message", status=502)
    return data


class PassthroughStream(FieldReader):
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

    def feed(self, event: dict[str, Any]) -> list[Event]:
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
