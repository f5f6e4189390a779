"""Anthropic Messages request -> OpenAI Chat Completions request (PROTOCOL.md 8.1)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..models import anthropic as a
from . import passthrough_profiles, web_search
from .builtin_tools import builtin_schema
from .errors import InvalidRequest
from .ids import PROXY_SIGNATURE_PREFIX, ToolNames, decode_tool_id, fit_tool_id
from .nulls import AddedNulls
from .providers import GENERIC, Profile, coerce
from .schema import gemini_schema
from .session import session_of_user_id
from .strict import strict_schema

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
MAX_STOP_SEQUENCES = 4
TOOL_ERROR_MARK = "[tool error] "
_EFFORTS = frozenset(("low", "medium", "high", "xhigh", "max"))
CLAUDE_REASONING_FORMAT = "anthropic-claude-v1"
KNOWN = frozenset(("output_format",))
"""Fields the models keep as extras that translation reads (the beta `output_format`)."""


@dataclass(frozen=True)
class RequestOptions:
    """How the upstream wants its request; from settings and routing, never from the client."""

    model: str
    stream_usage: bool = True
    """Send `stream_options.include_usage` (some servers reject it)."""
    reasoning_effort: bool = True
    """Map thinking and `output_config.effort` to the upstream's reasoning control
    (`reasoning_effort`, or the profile's own: OpenRouter `reasoning`, DeepSeek `thinking`)."""
    max_tokens_cap: int | None = None
    """Clamp `max_tokens` (Claude Code asks for 128000; many models allow far less)."""
    profile: Profile = GENERIC
    """The upstream's rules (`providers.resolve`); the generic profile applies none."""
    native_web_search: bool = False
    """Hand the `web_search` tool to the upstream's own search where it has one (OpenRouter,
    the Responses API) instead of offering a function the proxy runs."""

    passthrough: passthrough_profiles.PassthroughProfile = passthrough_profiles.GENERIC
    """Pass-through only: what the upstream's server is spared of the client's request (its
    profile and the configured `drop_fields` / `drop_betas`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):  # a recording's name or fields
            object.__setattr__(self, "profile", coerce(self.profile))
        if not isinstance(self.passthrough, passthrough_profiles.PassthroughProfile):
            object.__setattr__(self, "passthrough", passthrough_profiles.coerce(self.passthrough))


@dataclass
class OpenAIRequest:
    body: dict[str, Any]
    tool_names: ToolNames
    dropped: list[str] = field(default_factory=list)
    """What could not be expressed upstream, for a debug log line."""
    added_nulls: AddedNulls = field(default_factory=AddedNulls)
    """Strict schemas sent with optional properties made nullable (for the reply context)."""


@dataclass
class Translation:
    """What every part of one translation consults."""

    profile: Profile
    model: str
    names: ToolNames
    dropped: list[str]
    cache_control: bool
    """Forward `cache_control` on content parts (OpenRouter serving Claude or Gemini)."""
    null_tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    null_output: dict[str, Any] | None = None
    native_search: bool = False
    """The upstream runs `web_search` itself: no function is offered for it."""

    def call_id(self, client_id: str) -> str:
        return upstream_call_id(client_id, self.profile)

    def strict(self, schema: dict[str, Any], what: str) -> tuple[dict[str, Any], bool, bool]:
        """(schema, strict, nulls added): the strict-mode form of a schema the client wants
        kept to, or the schema as it is with `strict: false` when it has none."""
        form = strict_schema(schema)
        if form.schema is None:
            self.dropped.append(f"strict mode for {what} ({form.problem})")
            return schema, False, False
        return form.schema, True, form.added_nulls

    def added_nulls(self) -> AddedNulls:
        return AddedNulls(self.null_tools, self.null_output)

    def schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.profile.schema != "gemini":
            return schema
        removed: set[str] = set()
        cleaned = gemini_schema(schema, removed)
        if removed:
            note = "schema keywords Gemini rejects: " + ", ".join(sorted(removed))
            if note not in self.dropped:
                self.dropped.append(note)
        return cleaned


def upstream_call_id(client_id: str, profile: Profile) -> str:
    """The upstream's id for a tool call the client names by `client_id`."""
    return fit_tool_id(
        decode_tool_id(client_id)[0],
        max_length=profile.tool_id_max,
        alnum_length=profile.tool_id_alnum,
    )


def translate_request(request: a.MessagesRequest, options: RequestOptions) -> OpenAIRequest:
    profile, model = options.profile, options.model
    names = ToolNames([t.name for t in request.tools or ()])
    dropped: list[str] = []
    ctx = Translation(profile, model, names, dropped, profile.forwards_cache_control(model))
    ctx.native_search = web_search.native(options.native_web_search, "openai", profile.name)
    messages = _system_messages(request, ctx)
    messages.extend(_conversation(request.messages, ctx))
    _reasoning_content(messages, ctx)
    if profile.strict_strings:
        _plain_strings(messages)

    body: dict[str, Any] = {"model": model, "messages": messages}
    reasoning_model = profile.is_reasoning_model(model)
    drops = profile.reasoning_drops if reasoning_model else ()
    max_tokens = capped_max_tokens(request, options)
    field_name = profile.reasoning_max_tokens_field if reasoning_model else profile.max_tokens_field
    body[field_name] = max_tokens
    if request.stream:
        body["stream"] = True
        if options.stream_usage:
            body["stream_options"] = {"include_usage": True}
    sampling(request, body, drops, ctx)
    if request.stop_sequences:
        if "stop" in drops:
            dropped.append(f"stop_sequences (not accepted by {model})")
        else:
            body["stop"] = request.stop_sequences[:MAX_STOP_SEQUENCES]
            if len(request.stop_sequences) > MAX_STOP_SEQUENCES:
                dropped.append(f"stop_sequences beyond the first {MAX_STOP_SEQUENCES}")
    if request.metadata and request.metadata.user_id:
        body["user"] = _user_field(request.metadata.user_id)
        session = session_of_user_id(request.metadata.user_id)
        if session and profile.prompt_cache_key:
            # Hashed like `user`: the bucket only needs to be stable per conversation.
            body["prompt_cache_key"] = hashlib.sha256(session.encode()).hexdigest()[:32]
    _tools(request, body, ctx)
    if options.reasoning_effort:
        _thinking(request, body, max_tokens, ctx)
    output_format = json_output_format(request)
    if output_format is not None:
        body["response_format"] = _response_format(output_format, ctx)
    dropped.extend(unsent_fields(request))
    if profile.body_fields is not None:
        for key in [k for k in body if k not in profile.body_fields]:
            del body[key]
            dropped.append(f"{key} (not accepted by {profile.label})")
    return OpenAIRequest(body, names, dropped, ctx.added_nulls())


def capped_max_tokens(request: a.MessagesRequest, options: RequestOptions) -> int:
    cap = options.max_tokens_cap
    return request.max_tokens if cap is None else min(request.max_tokens, cap)


def sampling(
    request: a.MessagesRequest, body: dict[str, Any], drops: Iterable[str], ctx: Translation
) -> None:
    """`temperature` and `top_p` unless the model refuses them (`drops`); `top_k` where the
    profile forwards it."""
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if value is None:
            continue
        if name in drops and value != 1:
            # "Only the default (1) value is supported" on OpenAI reasoning models.
            ctx.dropped.append(f"{name} (not accepted by {ctx.model})")
        else:
            body[name] = value
    if request.top_k is not None:
        if ctx.profile.top_k:
            body["top_k"] = request.top_k
        else:
            ctx.dropped.append("top_k")


def unsent_fields(request: a.MessagesRequest) -> list[str]:
    """Request fields no translated dialect carries, and fields this proxy does not know."""
    unsent = [n for n in ("context_management", "service_tier") if getattr(request, n) is not None]
    unsent.extend(f"unknown field {key}" for key in request.model_extra or {} if key not in KNOWN)
    return unsent


# -- system ------------------------------------------------------------------------------


def _system_messages(request: a.MessagesRequest, ctx: Translation) -> list[dict[str, Any]]:
    """One leading system message. Claude Code's `role: "system"` messages and mid-conversation
    system blocks join it: strict chat templates reject a system message anywhere but first.
    With `cache_control` forwarded and marked, the blocks stay apart as text parts."""
    parts: list[dict[str, Any]] = []
    for block in request.system or ():
        if block.text.startswith(BILLING_HEADER_PREFIX):
            # Changes on every request and would defeat the upstream's prefix cache.
            ctx.dropped.append("system billing header")
            continue
        if block.text:
            parts.append(_text_part(block.text, block.cache_control, ctx))
    for message in request.messages:
        if message.role != "system" and a.MidConversationSystemBlock not in map(
            type, message.content
        ):
            continue  # most messages, looked through in C (validated blocks: the very class)
        for part in message.content:
            if isinstance(part, a.MidConversationSystemBlock):
                if part.text:
                    parts.append({"type": "text", "text": part.text})
            elif message.role == "system" and isinstance(part, a.TextBlock) and part.text:
                parts.append(_text_part(part.text, part.cache_control, ctx))
    if not parts:
        return []
    if any("cache_control" in p for p in parts):
        return [{"role": "system", "content": parts}]
    return [{"role": "system", "content": "\n\n".join(p["text"] for p in parts)}]


def _text_part(text: str, cache_control: a.CacheControl | None, ctx: Translation) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": text}
    if cache_control is not None and ctx.cache_control:
        part["cache_control"] = cache_control.model_dump(exclude_none=True)
    return part


# -- conversation ------------------------------------------------------------------------


def merged_turns(
    messages: list[a.Message], system_turns: bool = False
) -> Iterator[tuple[str, list[Any]]]:
    """Consecutive same-role turns as one turn, as the Anthropic API itself combines them.
    Claude Code's `role: "system"` messages are left out (they join the system prompt), or with
    `system_turns` are turns of their own, where they stand."""
    role: str | None = None
    blocks: list[Any] = []
    for message in messages:
        if message.role == "system" and not system_turns:
            continue
        if message.role != role and role is not None:
            yield role, blocks
            blocks = []
        role = message.role
        blocks.extend(message.content)
    if role is not None:
        yield role, blocks


def _conversation(messages: list[a.Message], ctx: Translation) -> Iterator[dict[str, Any]]:
    for role, blocks in merged_turns(messages):
        if role != "assistant":
            yield from _user(blocks, ctx)
            continue
        for part, searches in web_search.rounds(blocks):
            yield from _assistant(part, ctx)
            for use, result in searches:
                output = web_search.history_output(web_search.query_of(use), result.content)
                yield {"role": "tool", "tool_call_id": _search_call_id(use, ctx), "content": output}


# The thinking of an assistant message, until `_reasoning_content` decides whether it goes.
_THINKING = "\0thinking"


def _assistant(blocks: list[Any], ctx: Translation) -> Iterator[dict[str, Any]]:
    profile = ctx.profile
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[str] = []
    details: list[dict[str, Any]] = []  # OpenRouter reasoning_details, in block order
    signatures: list[dict[str, Any]] = []  # carried in tool ids; after the thinking
    reasoning_blocks = 0
    for block in blocks:
        if isinstance(block, a.TextBlock):
            if block.text:
                texts.append(_text_part(block.text, block.cache_control, ctx))
        elif isinstance(block, a.ToolUseBlock):
            call = {
                "id": ctx.call_id(block.id),
                "type": "function",
                "function": {
                    "name": ctx.names.to_upstream(block.name),
                    "arguments": _json(block.input),
                },
            }
            _restore_signature(call, block.id, signatures, ctx)
            calls.append(call)
        elif web_search.is_search_use(block):
            function = {"name": ctx.names.to_upstream(block.name), "arguments": _json(block.input)}
            calls.append(
                {"id": _search_call_id(block, ctx), "type": "function", "function": function}
            )
        elif isinstance(block, a.ThinkingBlock) and profile.passback == "reasoning_content":
            thinking.append(block.thinking)
        elif (
            isinstance(block, (a.ThinkingBlock, a.RedactedThinkingBlock))
            and profile.passback == "reasoning_details"
        ):
            detail = _reasoning_detail(block, reasoning_blocks, ctx)
            reasoning_blocks += 1
            if detail is not None:
                details.append(detail)
        elif not isinstance(block, a.MidConversationSystemBlock):  # already in the system prompt
            ctx.dropped.append(f"assistant {block.type} block")
    content: str | list[dict[str, Any]] | None = "\n\n".join(t["text"] for t in texts) or None
    if any("cache_control" in t for t in texts):
        content = texts
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    if details or signatures:
        message["reasoning_details"] = details + signatures
    if thinking:
        message[_THINKING] = "\n\n".join(t for t in thinking if t)
    if message["content"] is not None or calls:
        yield message


def _search_call_id(block: a.ServerToolUseBlock, ctx: Translation) -> str:
    return ctx.call_id(web_search.call_id(block.id))


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


# `json.dumps(value, ensure_ascii=False)` without building an encoder for every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _restore_signature(
    call: dict[str, Any], client_id: str, signatures: list[dict[str, Any]], ctx: Translation
) -> None:
    """Give the upstream back the thought signature it attached to this call (carried in
    the tool id, see `ids`), where this upstream reads it."""
    _, carried = decode_tool_id(client_id)
    if not carried:
        return
    carriers = ctx.profile.carriers
    restored = False
    if carried.extra_content and "extra_content" in carriers:
        call["extra_content"] = carried.extra_content
        restored = True
    if carried.reasoning_detail and "reasoning_details" in carriers:
        signatures.append({**carried.reasoning_detail, "id": call["id"]})
        restored = True
    if not restored:
        note = f"thought signature (not read by {ctx.profile.label})"
        if note not in ctx.dropped:
            ctx.dropped.append(note)


def _reasoning_detail(
    block: a.ThinkingBlock | a.RedactedThinkingBlock, index: int, ctx: Translation
) -> dict[str, Any] | None:
    """OpenRouter's lossless carrier for Claude's thinking: `reasoning.text` with the
    signature, `reasoning.encrypted` for redacted thinking."""
    if isinstance(block, a.RedactedThinkingBlock):
        return {
            "type": "reasoning.encrypted",
            "data": block.data,
            "format": CLAUDE_REASONING_FORMAT,
            "index": index,
        }
    signed = bool(block.signature) and not block.signature.startswith(PROXY_SIGNATURE_PREFIX)
    if not signed and ctx.profile.needs_signed_reasoning(ctx.model):
        # Claude refuses thinking without its own signature; other models take the text.
        ctx.dropped.append("assistant thinking block without an upstream signature")
        return None
    detail: dict[str, Any] = {"type": "reasoning.text", "text": block.thinking}
    if signed:
        detail["signature"] = block.signature
    detail["format"] = CLAUDE_REASONING_FORMAT if signed else "unknown"
    detail["index"] = index
    return detail


def _reasoning_content(messages: list[dict[str, Any]], ctx: Translation) -> None:
    """DeepSeek (thinking mode) 400s unless turns that called tools come back with their
    `reasoning_content`; local servers' templates (gpt-oss, Qwen3) render it for tool calls."""
    if ctx.profile.passback != "reasoning_content":
        return
    every_turn = ctx.profile.passback_every_turn
    for message in messages:
        if message["role"] != "assistant":
            continue
        thinking = message.pop(_THINKING, "")
        if every_turn or (thinking and message.get("tool_calls")):
            message["reasoning_content"] = thinking
        elif thinking:
            ctx.dropped.append("assistant thinking block")


def _plain_strings(messages: list[dict[str, Any]]) -> None:
    """For servers that take only strings (llama-cpp-python, Groq's system role, Ollama's
    `content: null`): text-only part lists joined, no null content."""
    for message in messages:
        content = message.get("content")
        if content is None:
            message["content"] = ""
        elif isinstance(content, list) and all(
            p.get("type") == "text" and "cache_control" not in p for p in content
        ):
            message["content"] = "\n\n".join(p["text"] for p in content)


def _user(blocks: list[Any], ctx: Translation) -> Iterator[dict[str, Any]]:
    """Tool results first, as `tool` messages right after the assistant turn that called;
    then the rest of the turn, with any images the tool results carried."""
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, a.ToolResultBlock):
            text, media = _tool_result(block, ctx)
            content: str | list[dict[str, Any]] = text
            if block.cache_control is not None and ctx.cache_control:
                content = [_text_part(text, block.cache_control, ctx)]
            yield {
                "role": "tool",
                "tool_call_id": ctx.call_id(block.tool_use_id),
                "content": content,
            }
            parts.extend(media)
    for block in blocks:
        if not isinstance(block, a.ToolResultBlock):
            parts.extend(_user_parts(block, ctx))
    if not parts:
        return
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        yield {"role": "user", "content": parts[0]["text"]}
    else:
        yield {"role": "user", "content": parts}


def _tool_result(block: a.ToolResultBlock, ctx: Translation) -> tuple[str, list[dict[str, Any]]]:
    """The text of a tool result and, apart, its images: OpenAI tool messages are text only."""
    texts: list[str] = []
    media: list[dict[str, Any]] = []
    for item in block.content or ():
        for part in _user_parts(item, ctx, cache_control=False):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                media.append(part)
    if media:
        noun = "image" if len(media) == 1 else f"{len(media)} images"
        verb = "follows" if len(media) == 1 else "follow"
        texts.append(f"[{noun} from this tool result {verb} in the next message]")
        # The upstream knows the call by its own id, the one its tool message carries.
        call_id = ctx.call_id(block.tool_use_id)
        media.insert(0, {"type": "text", "text": f"Output of tool call {call_id}:"})
    text = "\n".join(texts)
    if block.is_error:
        text = TOOL_ERROR_MARK + text
    return text, media


def _user_parts(
    block: Any, ctx: Translation, cache_control: bool = True
) -> Iterator[dict[str, Any]]:
    parts = list(_parts_of(block, ctx))
    marked = getattr(block, "cache_control", None)
    if parts and cache_control and ctx.cache_control and marked is not None:
        parts[-1] = {**parts[-1], "cache_control": marked.model_dump(exclude_none=True)}
    yield from parts


def _parts_of(block: Any, ctx: Translation) -> Iterator[dict[str, Any]]:
    if isinstance(block, a.TextBlock):
        if block.text:
            yield {"type": "text", "text": block.text}
    elif isinstance(block, a.ImageBlock):
        yield {"type": "image_url", "image_url": {"url": image_url(block.source)}}
    elif isinstance(block, a.DocumentBlock):
        yield from _document(block, ctx)
    elif isinstance(block, a.SearchResultBlock):
        body = "\n".join(t.text for t in block.content)
        yield {"type": "text", "text": f"[{block.source}] {block.title}\n{body}"}
    elif not isinstance(block, a.MidConversationSystemBlock):  # already in the system prompt
        ctx.dropped.append(f"user {block.type} block")


def image_url(source: Any) -> str:
    if isinstance(source, a.Base64Source):
        return f"data:{source.media_type};base64,{source.data}"
    if isinstance(source, a.UrlSource):
        return source.url
    raise InvalidRequest("image source of type 'file' (Files API) is not supported by this proxy")


def _document(block: a.DocumentBlock, ctx: Translation) -> Iterator[dict[str, Any]]:
    heading = "\n".join(x for x in (block.title, block.context) if x)
    source = block.source
    if isinstance(source, a.Base64Source):
        if source.media_type == "application/pdf":
            filename = (block.title or "document") + ".pdf"
            yield {
                "type": "file",
                "file": {
                    "filename": filename,
                    "file_data": f"data:{source.media_type};base64,{source.data}",
                },
            }
            return
        raise InvalidRequest(f"document media_type {source.media_type!r} is not supported")
    if isinstance(source, a.PlainTextSource):
        yield {"type": "text", "text": f"{heading}\n{source.data}" if heading else source.data}
    elif isinstance(source, a.ContentSource):
        if heading:
            yield {"type": "text", "text": heading}
        for item in source.content:
            yield from _parts_of(item, ctx)
    elif isinstance(source, a.UrlSource):
        # The proxy never fetches on the client's behalf; the model gets the reference.
        ctx.dropped.append("document url (sent as a reference, not fetched)")
        yield {"type": "text", "text": f"{heading}\nDocument: {source.url}".strip()}
    else:
        raise InvalidRequest("document source of type 'file' (Files API) is not supported")


# -- tools and options -------------------------------------------------------------------


def _tools(request: a.MessagesRequest, body: dict[str, Any], ctx: Translation) -> None:
    tools = list(tool_definitions(request.tools or (), ctx))
    search = web_search.search_tool(request.tools or ())
    if search is not None and ctx.native_search:
        tools.append(web_search.openrouter_tool(search))
    add_tools(
        request, body, tools, ctx, lambda name: {"type": "function", "function": {"name": name}}
    )


def add_tools(
    request: a.MessagesRequest,
    body: dict[str, Any],
    tools: list[dict[str, Any]],
    ctx: Translation,
    named: Callable[[str], dict[str, Any]],
) -> None:
    """`tools` with `tool_choice` and `parallel_tool_calls` as the request's `tool_choice` asks;
    `named` is the dialect's choice of one tool, given its upstream name."""
    choice = request.tool_choice
    if not tools:
        if choice is not None and not isinstance(choice, a.ToolChoiceNone):
            ctx.dropped.append("tool_choice without usable tools")
        return
    body["tools"] = tools
    if isinstance(choice, a.ToolChoiceAuto):
        body["tool_choice"] = "auto"
    elif isinstance(choice, a.ToolChoiceAny):
        body["tool_choice"] = "required"
    elif isinstance(choice, a.ToolChoiceTool):
        body["tool_choice"] = named(ctx.names.to_upstream(choice.name))
    elif isinstance(choice, a.ToolChoiceNone):
        body["tool_choice"] = "none"
    if choice is not None and getattr(choice, "disable_parallel_tool_use", None):
        body["parallel_tool_calls"] = False


def tool_definitions(tools: Iterable[Any], ctx: Translation) -> Iterator[dict[str, Any]]:
    for tool in tools:
        if isinstance(tool, a.CustomTool):
            description, schema = tool.description, tool.input_schema
        elif web_search.is_search_tool(tool):
            web_search.search_tool([tool])  # refused as the API refuses it, whoever searches
            if ctx.native_search:
                continue
            description, schema = web_search.function_definition()
        else:
            builtin = builtin_schema(tool.type)
            if builtin is None:
                ctx.dropped.append(f"server tool {tool.type}")
                continue
            description, schema = builtin
        function: dict[str, Any] = {"name": ctx.names.to_upstream(tool.name)}
        if description:
            function["description"] = description
        if is_strict(tool) and ctx.profile.schema != "gemini":
            function["parameters"], strict, nulls = ctx.strict(schema, f"tool {tool.name}")
            if strict:
                function["strict"] = True
            if nulls:
                ctx.null_tools[tool.name] = schema
        else:
            function["parameters"] = ctx.schema(schema)
        yield {"type": "function", "function": function}


def is_strict(tool: Any) -> bool:
    """A custom tool whose input the client wants kept to its schema (`strict: true`)."""
    return isinstance(tool, a.CustomTool) and (tool.model_extra or {}).get("strict") is True


def _thinking(
    request: a.MessagesRequest, body: dict[str, Any], max_tokens: int, ctx: Translation
) -> None:
    """Thinking and `output_config.effort`, the way this upstream asks for reasoning."""
    profile, model = ctx.profile, ctx.model
    style = profile.reasoning
    if style == "effort":
        effort = reasoning_effort(request)
        if effort and profile.takes_effort(model):
            body["reasoning_effort"] = profile.effort(effort)
        elif effort:
            ctx.dropped.append(f"reasoning_effort (not accepted by {model})")
        switch = thinking_switch(request)
        if profile.thinking_kwargs and switch is not None:
            body["chat_template_kwargs"] = {"enable_thinking": switch}
    elif style == "openrouter":
        reasoning = _openrouter_reasoning(request, max_tokens, ctx)
        if reasoning:
            body["reasoning"] = reasoning
    elif style == "deepseek":
        switch = thinking_switch(request)
        if switch is not None:
            body["thinking"] = {"type": "enabled" if switch else "disabled"}
    elif request.thinking is not None and not isinstance(request.thinking, a.ThinkingDisabled):
        ctx.dropped.append(f"thinking (no reasoning control on {profile.label})")


def _requested_effort(request: a.MessagesRequest) -> str | None:
    effort = request.output_config.effort if request.output_config else None
    return effort if effort in _EFFORTS else None


def reasoning_effort(request: a.MessagesRequest) -> str | None:
    """low, medium, high, xhigh or max: what the client asked for, before the upstream's
    accepted values narrow it."""
    effort = _requested_effort(request)
    thinking = request.thinking
    if isinstance(thinking, a.ThinkingDisabled):
        return None
    if isinstance(thinking, a.ThinkingEnabled):
        if effort:
            return effort
        budget = thinking.budget_tokens
        return "low" if budget < 2048 else "medium" if budget < 8192 else "high"
    return effort


def thinking_switch(request: a.MessagesRequest) -> bool | None:
    thinking = request.thinking
    if isinstance(thinking, (a.ThinkingEnabled, a.ThinkingAdaptive)):
        return True
    if isinstance(thinking, a.ThinkingDisabled):
        return False
    return None


def _openrouter_reasoning(
    request: a.MessagesRequest, max_tokens: int, ctx: Translation
) -> dict[str, Any] | None:
    """`{max_tokens: budget}` for a thinking budget (exact for Claude), else `{effort}`."""
    thinking = request.thinking
    if isinstance(thinking, a.ThinkingDisabled):
        return None
    if isinstance(thinking, a.ThinkingEnabled):
        budget = thinking.budget_tokens
        if budget >= max_tokens:
            # Claude needs the budget below max_tokens, which a cap may have lowered.
            budget = max_tokens - 1
            ctx.dropped.append(f"thinking budget above max_tokens (sent {budget})")
        return {"max_tokens": budget} if budget > 0 else None
    effort = _requested_effort(request)
    if effort:
        return {"effort": ctx.profile.effort(effort)}
    if isinstance(thinking, a.ThinkingAdaptive):
        return {"enabled": True}
    return None


def json_output_format(request: a.MessagesRequest) -> dict[str, Any] | None:
    """The JSON schema of a structured-output request: `output_config.format`, or the beta
    `output_format` that SDKs still send during the transition (PROTOCOL.md 13.1)."""
    fmt = request.output_config.format if request.output_config else None
    if fmt is None:
        fmt = (request.model_extra or {}).get("output_format")
    if not isinstance(fmt, dict) or fmt.get("type", "json_schema") != "json_schema":
        return None
    schema = fmt.get("schema")
    return schema if isinstance(schema, dict) else {}


def output_schema(schema: dict[str, Any], ctx: Translation) -> tuple[dict[str, Any], bool]:
    """(schema, strict) for a structured output; notes the nulls the strict form adds."""
    if ctx.profile.schema == "gemini":
        return ctx.schema(schema), True
    sent, strict, nulls = ctx.strict(schema, "the output format")
    if nulls:
        ctx.null_output = schema
    return sent, strict


def _response_format(schema: dict[str, Any], ctx: Translation) -> dict[str, Any]:
    sent, strict = output_schema(schema, ctx)
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": sent, "strict": strict},
    }


def _user_field(user_id: str) -> str:
    # Claude Code's user_id is a long JSON string; OpenAI caps `user` and only needs it stable.
    if len(user_id) <= 64:
        return user_id
    return hashlib.sha256(user_id.encode()).hexdigest()[:32]
