"""`claude-bridge translate`: the proxy's translation, offline, on files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.ids import ToolNames, new_message_id
from claude_bridge.proxy.core.response import translate_response
from claude_bridge.proxy.core.sse import SSEDecoder, encode_event
from claude_bridge.proxy.core.stream import translate_sse
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest
from claude_bridge.proxy.models.openai import ChatCompletion
from claude_bridge.proxy.pipeline import translate_body

from ..inputs import FILE_ARGUMENT, read_input, write_json
from .settings import CONFIG_OPTION, settings_from


def translate(
    file: str = FILE_ARGUMENT,
    response: bool = typer.Option(
        False, "--response", help="FILE is an OpenAI chat completion: print the Anthropic message."
    ),
    stream: bool = typer.Option(
        False, "--stream", help="FILE is an OpenAI SSE stream: print the Anthropic SSE stream."
    ),
    request_file: Path = typer.Option(
        None,
        "--request",
        help="With --response/--stream: the Anthropic request it answers "
        "(gives the model name, tool names and stop sequences).",
    ),
    config: Path = CONFIG_OPTION,
) -> None:
    """Translate offline, exactly as `serve` would.

    Examples:

        claude-bridge translate request.json             # Anthropic request -> OpenAI request

        claude-bridge translate --response reply.json    # OpenAI response -> Anthropic message

        claude-bridge translate --stream chunks.sse      # OpenAI SSE -> Anthropic SSE
    """
    settings = settings_from(config)
    if response and stream:
        raise InvalidRequest("--response and --stream exclude each other")
    data = read_input(file)
    if not (response or stream):
        # What `serve` does with the body (routing on its features, the model's output limit),
        # less the headers a file does not have.
        write_json(translate_body(data, settings, settings.endpoints(), {}).body)
        return
    ctx = _context(request_file)
    if stream:
        _require_sse(data)
        sys.stdout.buffer.write(b"".join(encode_event(e) for e in translate_sse(data, ctx)))
        return
    try:
        completion = ChatCompletion.model_validate(json.loads(data))
    except ValueError as exc:
        raise InvalidRequest(f"not an OpenAI chat completion: {str(exc).splitlines()[0]}") from None
    write_json(translate_response(completion, ctx))


def _require_sse(data: bytes) -> None:
    """An OpenAI event stream has `data:` events, each a JSON chunk or `[DONE]`: anything else
    (a JSON reply, a log, an empty file) is an input error, not a stream that broke off."""
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
    found = f"{len(events)} events, none a JSON chunk" if events else "no `data:` lines"
    raise InvalidRequest(f"not an OpenAI SSE stream ({found}); for a JSON reply use --response")


def _context(request_file: Path | None) -> ReplyContext:
    if request_file is None:
        return ReplyContext(model="claude-bridge", message_id=new_message_id())
    request = parse_body(request_file.read_bytes(), MessagesRequest)
    return ReplyContext(
        model=request.model,
        message_id=new_message_id(),
        tool_names=ToolNames([t.name for t in request.tools or ()]),
        stop_sequences=tuple(request.stop_sequences or ()),
    )
