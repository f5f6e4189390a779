"""Anthropic Messages request -> OpenAI Responses request (PROTOCOL.md 10.3-10.5, 10.9).

The counterpart of `core.request.translate_request`, with the same options and result; what
both dialects say alike (tool definitions and strict schemas, efforts, sampling, images) comes
from there. Stateless by design: `store: false`, and the reasoning of earlier turns goes back
as the items the thinking blocks' signatures carry (`carrier`), never by id alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from ...models import anthropic as a
from .. import web_search
from ..errors import InvalidRequest
from ..ids import ToolNames
from ..request import (
    BILLING_HEADER_PREFIX,
    TOOL_ERROR_MARK,
    OpenAIRequest,
    RequestOptions,
    Translation,
    add_tools,
    capped_max_tokens,
    image_url,
    json_output_format,
    merged_turns,
    output_schema,
    reasoning_effort,
    sampling,
    thinking_switch,
    tool_definitions,
    unsent_fields,
)
from ..session import session_id
from .carrier import unpack
from .upstreams import EMPTY_REASONING_REJECTED

MIN_OUTPUT_TOKENS = 16
"""OpenAI refuses `max_output_tokens` below 16 (Claude Code's gateway probe asks for 1)."""
INCLUDE = ("reasoning.encrypted_content",)

Item = dict[str, Any]


def translate_request(request: a.MessagesRequest, options: RequestOptions) -> OpenAIRequest:
    profile, model = options.profile, options.model
    names = ToolNames([t.name for t in request.tools or ()])
    ctx = Translation(profile, model, names, [], cache_control=False)
    ctx.native_search = web_search.native(options.native_web_search, "responses", profile.name)
    body: dict[str, Any] = {"model": model}
    instructions = _instructions(request, ctx)
    if instructions:
        body["instructions"] = instructions
    body["input"] = list(_input(request.messages, ctx))
    body["max_output_tokens"] = max(capped_max_tokens(request, options), MIN_OUTPUT_TOKENS)
    body["store"] = False
    if profile.takes_effort(model):
        # Only reasoning models: others refuse it ("Encrypted content is not supported with
        # this model"); for these, the reasoning they always produce can come back.
        body["include"] = list(INCLUDE)
    if request.stream:
        body["stream"] = True
    drops = profile.reasoning_drops if profile.is_reasoning_model(model) else ()
    sampling(request, body, drops, ctx)
    if request.stop_sequences:
        ctx.dropped.append("stop_sequences (the Responses API has no stop sequences)")
    if request.metadata and request.metadata.user_id:
        body.update(_identifiers(request.metadata.user_id))
    _tools(request, body, ctx)
    if options.reasoning_effort:
        _reasoning(request, body, ctx)
    schema = json_output_format(request)
    if schema is not None:
        sent, strict = output_schema(schema, ctx)
        body["text"] = {
            "format": {"type": "json_schema", "name": "output", "schema": sent, "strict": strict}
        }
    ctx.dropped.extend(unsent_fields(request))
    return OpenAIRequest(body, names, ctx.dropped, ctx.added_nulls())


def _instructions(request: a.MessagesRequest, ctx: Translation) -> str:
    texts: list[str] = []
    for block in request.system or ():
        if block.text.startswith(BILLING_HEADER_PREFIX):
            # Changes on every request and would defeat the upstream's prefix cache.
            ctx.dropped.append("system billing header")
        elif block.text:
            texts.append(block.text)
    return "\n\n".join(texts)


def _identifiers(user_id: str) -> dict[str, str]:
    """`safety_identifier` (at most 64 characters, a hash: the end user's id never leaves) and
    a `prompt_cache_key` per conversation, so one session's requests meet the same cache."""
    session = session_id({}, {"metadata": {"user_id": user_id}}) or user_id
    return {
        "safety_identifier": hashlib.sha256(user_id.encode()).hexdigest()[:32],
        "prompt_cache_key": "cb-" + hashlib.sha256(session.encode()).hexdigest()[:32],
    }


# -- input items -------------------------------------------------------------------------


def _input(messages: list[a.Message], ctx: Translation) -> Iterator[Item]:
    for role, blocks in merged_turns(messages, system_turns=True):
        if role == "assistant":
            yield from _assistant(blocks, ctx)
        elif role == "user":
            yield from _user(blocks, ctx)
        else:
            text = "\n\n".join(_system_text(b) for b in blocks if _system_text(b))
            if text:
                yield _system(text)


def _system_text(block: Any) -> str:
    if isinstance(block, (a.TextBlock, a.MidConversationSystemBlock)):
        return block.text
    return ""


def _system(text: str) -> Item:
    # `system`, not `developer`: local servers' templates know it, and OpenAI reads it alike.
    return {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}


def _user(blocks: list[Any], ctx: Translation) -> Iterator[Item]:
    """Tool results first, each a `function_call_output` right after the calls; then the rest
    of the turn as one user message (split where a mid-conversation system block stands)."""
    for block in blocks:
        if isinstance(block, a.ToolResultBlock):
            yield _tool_output(block, ctx)
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, a.ToolResultBlock):
            continue
        if isinstance(block, a.MidConversationSystemBlock):
            if parts:
                yield _message("user", parts)
                parts = []
            yield _system(block.text)
        else:
            parts.extend(_parts(block, ctx))
    if parts:
        yield _message("user", parts)


def _message(role: str, content: list[dict[str, Any]]) -> Item:
    return {"type": "message", "role": role, "content": content}


def _tool_output(block: a.ToolResultBlock, ctx: Translation) -> Item:
    """A tool result's text as a string; with images or files, the part list Responses takes
    in tool outputs (unlike Chat Completions' tool messages)."""
    parts = [p for item in block.content or () for p in _parts(item, ctx)]
    mark = TOOL_ERROR_MARK if block.is_error else ""
    output: str | list[dict[str, Any]]
    if all(p["type"] == "input_text" for p in parts):
        output = mark + "\n".join(p["text"] for p in parts)
    else:
        output = [{"type": "input_text", "text": mark}, *parts] if mark else parts
    return {
        "type": "function_call_output",
        "call_id": ctx.call_id(block.tool_use_id),
        "output": output,
    }


def _parts(block: Any, ctx: Translation) -> Iterator[dict[str, Any]]:
    if isinstance(block, a.TextBlock):
        if block.text:
            yield _text(block.text)
    elif isinstance(block, a.ImageBlock):
        yield {"type": "input_image", "image_url": image_url(block.source), "detail": "auto"}
    elif isinstance(block, a.DocumentBlock):
        yield from _document(block, ctx)
    elif isinstance(block, a.SearchResultBlock):
        body = "\n".join(t.text for t in block.content)
        yield _text(f"[{block.source}] {block.title}\n{body}")
    elif isinstance(block, a.ToolReferenceBlock):
        # Claude Code's ToolSearch result; the tool itself is in `tools` (LiteLLM's wording).
        yield _text(f"[Loaded tool: {block.tool_name}]")
    else:
        ctx.dropped.append(f"user {block.type} block")


def _text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _document(block: a.DocumentBlock, ctx: Translation) -> Iterator[dict[str, Any]]:
    heading = "\n".join(x for x in (block.title, block.context) if x)
    source = block.source
    if isinstance(source, a.Base64Source):
        if source.media_type != "application/pdf":
            raise InvalidRequest(f"document media_type {source.media_type!r} is not supported")
        yield {
            "type": "input_file",
            "filename": (block.title or "document") + ".pdf",
            "file_data": f"data:{source.media_type};base64,{source.data}",
        }
    elif isinstance(source, a.UrlSource):
        # The upstream fetches it (Responses takes file URLs); the proxy never does.
        yield {"type": "input_file", "file_url": source.url}
    elif isinstance(source, a.PlainTextSource):
        yield _text(f"{heading}\n{source.data}" if heading else source.data)
    elif isinstance(source, a.ContentSource):
        if heading:
            yield _text(heading)
        for item in source.content:
            yield from _parts(item, ctx)
    else:
        raise InvalidRequest("document source of type 'file' (Files API) is not supported")


def _assistant(blocks: list[Any], ctx: Translation) -> Iterator[Item]:
    """The turn's items in block order (thinking -> reasoning, text -> message, tool_use ->
    function_call), so each reasoning item comes right before what it produced."""
    items: list[Item] = []
    texts: list[dict[str, Any]] = []

    def flush() -> None:
        if texts:
            items.append(_message("assistant", list(texts)))
            texts.clear()

    for block in blocks:
        if isinstance(block, a.TextBlock):
            if block.text:
                texts.append({"type": "output_text", "text": block.text})
            continue
        flush()
        if isinstance(block, a.ToolUseBlock):
            items.append(
                {
                    "type": "function_call",
                    "call_id": ctx.call_id(block.id),
                    "name": ctx.names.to_upstream(block.name),
                    "arguments": json.dumps(block.input, ensure_ascii=False),
                }
            )
        elif isinstance(block, (a.ThinkingBlock, a.RedactedThinkingBlock)):
            reasoning = _reasoning_item(block, ctx)
            if reasoning is not None:
                items.append(reasoning)
        elif isinstance(block, a.MidConversationSystemBlock):
            items.append(_system(block.text))
        elif web_search.is_search_use(block) or web_search.is_search_result(block):
            items.extend(_search_items(block, blocks, ctx))
        else:
            ctx.dropped.append(f"assistant {block.type} block")
    flush()
    while items and items[-1]["type"] == "reasoning":
        # "Item 'rs_…' of type 'reasoning' was provided without its required following item."
        items.pop()
        ctx.dropped.append("assistant thinking block with nothing after it")
    yield from items


def _search_items(block: Any, blocks: list[Any], ctx: Translation) -> Iterator[Item]:
    """A search the proxy ran, as the function call and output the model made and read."""
    if isinstance(block, a.ServerToolUseBlock):
        if any(web_search.is_search_result(b) and b.tool_use_id == block.id for b in blocks):
            yield {
                "type": "function_call",
                "call_id": ctx.call_id(web_search.call_id(block.id)),
                "name": ctx.names.to_upstream(block.name),
                "arguments": json.dumps(block.input, ensure_ascii=False),
            }
        return
    use = next(
        (b for b in blocks if web_search.is_search_use(b) and b.id == block.tool_use_id), None
    )
    if use is not None:
        yield {
            "type": "function_call_output",
            "call_id": ctx.call_id(web_search.call_id(use.id)),
            "output": web_search.history_output(web_search.query_of(use), block.content),
        }


def _reasoning_item(
    block: a.ThinkingBlock | a.RedactedThinkingBlock, ctx: Translation
) -> Item | None:
    """The reasoning item a thinking block carries for this upstream; None for any other
    (real Anthropic signatures, another upstream's, the proxy's plain ones): left out."""
    thinking = block.thinking if isinstance(block, a.ThinkingBlock) else ""
    signature = block.signature if isinstance(block, a.ThinkingBlock) else block.data
    carried = unpack(signature, ctx.profile.name)
    if carried is None:
        ctx.dropped.append(f"assistant {block.type} block (not from this upstream)")
        return None
    item: Item = {"type": "reasoning", "id": carried.id, "summary": []}
    if thinking and carried.kind == "t":
        item["content"] = [{"type": "reasoning_text", "text": thinking}]
    elif thinking:
        item["summary"] = [{"type": "summary_text", "text": thinking}]
    elif ctx.profile.name in EMPTY_REASONING_REJECTED:
        ctx.dropped.append(f"assistant {block.type} block (empty reasoning, refused here)")
        return None
    item["encrypted_content"] = carried.encrypted_content
    return item


# -- tools and options -------------------------------------------------------------------


def _tools(request: a.MessagesRequest, body: dict[str, Any], ctx: Translation) -> None:
    """Function tools, flat; `strict` always said, since Responses takes an omitted `strict` as
    "make it strict" and would make every optional parameter required (PROTOCOL.md 10.5)."""
    tools = []
    for definition in tool_definitions(request.tools or (), ctx):
        function = dict(definition["function"])
        tools.append({"type": "function", **function, "strict": function.get("strict", False)})
    search = web_search.search_tool(request.tools or ())
    if search is not None and ctx.native_search:
        native, dropped = web_search.responses_tool(search)
        tools.append(native)
        ctx.dropped.extend(dropped)
        # The URLs it found, for the client's result block (else only the query comes back).
        body["include"] = [*body.get("include", ()), "web_search_call.action.sources"]
    add_tools(request, body, tools, ctx, lambda name: {"type": "function", "name": name})


def _reasoning(request: a.MessagesRequest, body: dict[str, Any], ctx: Translation) -> None:
    """`reasoning: {effort, summary}`: the effort the client asked for (or its thinking budget's
    bucket), and summaries whenever thinking is on and shown, since they become the thinking
    blocks."""
    profile, model = ctx.profile, ctx.model
    effort = reasoning_effort(request)
    display = (request.thinking.model_extra or {}).get("display") if request.thinking else None
    summary = thinking_switch(request) is True and display != "omitted"
    if not (effort or summary):
        return
    if not profile.takes_effort(model):
        ctx.dropped.append(f"reasoning (not accepted by {model})")
        return
    reasoning: dict[str, str] = {}
    if effort:
        reasoning["effort"] = profile.effort(effort)
    if summary:
        reasoning["summary"] = "auto"
    body["reasoning"] = reasoning
