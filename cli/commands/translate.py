"""`claude-bridge translate`: the proxy's translation, offline, on files."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import typer

from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core import dialects
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.routing import Route
from claude_bridge.proxy.core.sse import SSEDecoder, encode_event
from claude_bridge.proxy.core.stream import run_sse
from claude_bridge.proxy.plan import Plan, event_source, plan, read, reply_message, routed

from ..inputs import FILE_ARGUMENT, read_input, write_json
from .settings import CONFIG_OPTION, settings_from

# Routed in place of the request a reply answers when none is given.
_STAND_IN = (
    b'{"model": "claude-bridge", "max_tokens": 1, "messages": [{"role": "user", "content": "-"}]}'
)


def translate(
    file: str = FILE_ARGUMENT,
    response: bool = typer.Option(
        False,
        "--response",
        help="FILE is the upstream's JSON reply: print the Anthropic message.",
    ),
    stream: bool = typer.Option(
        False, "--stream", help="FILE is the upstream's SSE stream: print the Anthropic SSE stream."
    ),
    request_file: Path = typer.Option(
        None,
        "--request",
        help="With --response/--stream: the Anthropic request it answers (gives the model "
        "name, tool names, stop sequences, and the upstream it is routed to).",
    ),
    upstream: str = typer.Option(
        None,
        "--upstream",
        help="Send to this configured upstream instead of the one routing picks.",
    ),
    dialect: str = typer.Option(
        None,
        "--dialect",
        help="Speak this dialect (openai, responses, anthropic) instead of the upstream's mode.",
    ),
    config: Path = CONFIG_OPTION,
) -> None:
    """Translate offline, exactly as `serve` would.

    Examples:

        claude-bridge translate request.json             # Anthropic request -> upstream request

        claude-bridge translate --response reply.json    # upstream reply -> Anthropic message

        claude-bridge translate --stream chunks.sse      # upstream SSE -> Anthropic SSE

        claude-bridge translate --dialect responses --stream events.sse --request request.json
    """
    settings = settings_from(config)
    if response and stream:
        raise InvalidRequest("--response and --stream exclude each other")
    data = read_input(file)
    if not (response or stream):
        # What `serve` does with the body, less the headers a file does not have.
        write_json(_plan(data, settings, upstream, dialect).body)
        return
    request = request_file.read_bytes() if request_file is not None else _STAND_IN
    planned = _plan(request, settings, upstream, dialect)
    if request_file is None:
        # A reply context that knows nothing of a request: no tool names, no input estimate.
        planned = replace(planned, ctx=ReplyContext(planned.model, planned.ctx.message_id))
    if stream:
        _require_sse(data)
        events = run_sse(event_source(planned), data)
        sys.stdout.buffer.write(b"".join(encode_event(e) for e in events))
        return
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise InvalidRequest(f"not a JSON reply: {str(exc).splitlines()[0]}") from None
    write_json(reply_message(reply, planned))


def _plan(raw: bytes, settings: Settings, upstream: str | None, dialect: str | None) -> Plan:
    """The plan `serve` would make for `raw`, sent to `upstream` and in `dialect` if given."""
    endpoints = settings.endpoints()
    if upstream is not None and upstream not in endpoints:
        known = ", ".join(endpoints)
        raise InvalidRequest(f"no upstream named {upstream!r} (configured: {known})")
    try:
        speaker = None if dialect is None else dialects.by_name(dialect)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    asked = read(raw, {})
    to = routed(settings, asked.request.model, asked.features)
    if upstream is not None:
        to = Route(upstream, to.model, "--upstream")
    return plan(asked, settings, endpoints, {}, to=to, dialect=speaker)


def _require_sse(data: bytes) -> None:
    """An upstream event stream has `data:` events, each a JSON object or `[DONE]`: anything
    else (a JSON reply, a log, an empty file) is an input error, not a stream that broke off."""
    decoder = SSEDecoder()
    events = decoder.decode(data) + decoder.flush()
    for event in events:
        if event.data.strip() == "[DONE]":
            return
        try:
            if isinstance(json.loads(event.data), dict):
                return
        except ValueError:
            continue
    found = f"{len(events)} events, none a JSON object" if events else "no `data:` lines"
    raise InvalidRequest(f"not an SSE stream ({found}); for a JSON reply use --response")
