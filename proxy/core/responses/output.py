"""What a Responses reply says, read alike for a JSON reply and a stream (PROTOCOL.md 10.6,
10.10): output items as Anthropic blocks, the stop reason, usage, and failures as errors.

Upstream JSON is read as plain dicts, every field checked where it is used: servers that
implement the dialect (DeepSeek, vLLM, Ollama, LM Studio) each leave out different fields.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..context import ReplyContext
from ..errors import UpstreamError, from_stream_error, from_upstream_response
from ..ids import proxy_signature, tool_id_to_client
from ..jsonfix import parse_arguments
from ..stop import stop_reason
from .carrier import Kind, pack

Block = dict[str, Any]

# `error.code` of a failed response or an `error` event -> the HTTP status it amounts to.
_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,  # from_upstream_response makes it a billing error
    "server_error": 500,
    "invalid_prompt": 400,
    "bio_policy": 400,
    "data_residency_mismatch": 400,
    "context_length_exceeded": 400,
    "invalid_request_error": 400,
    "model_not_found": 404,
    "vector_store_timeout": 504,
}
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


def reasoning_text(item: dict[str, Any]) -> tuple[str, Kind]:
    """The readable part of a reasoning item: its summaries, else the clear reasoning that
    open-weight servers send as `content[].reasoning_text`; parts joined by a blank line."""
    summary = [text_of(p.get("text")) for p in _dicts(item.get("summary"))]
    if any(summary):
        return "\n\n".join(t for t in summary if t), "s"
    content = [
        text_of(p.get("text"))
        for p in _dicts(item.get("content"))
        if p.get("type") == "reasoning_text"
    ]
    text = "\n\n".join(t for t in content if t)
    return text, "t" if text else "s"


def carried_signature(item: dict[str, Any], scope: str, kind: Kind) -> str | None:
    """The signature that brings this reasoning item back on the next request, when the
    upstream gave the encrypted content that makes that possible without stored state."""
    blob, item_id = text_of(item.get("encrypted_content")), text_of(item.get("id"))
    return pack(scope, item_id, blob, kind) if blob and item_id else None


def reasoning_blocks(item: dict[str, Any], scope: str) -> list[Block]:
    """A thinking block; with no text but an encrypted blob, a redacted_thinking block (the blob
    still round-trips, and no empty thinking is shown); with neither, nothing."""
    text, kind = reasoning_text(item)
    signature = carried_signature(item, scope, kind)
    if text:
        return [
            {"type": "thinking", "thinking": text, "signature": signature or proxy_signature(text)}
        ]
    if signature:
        return [{"type": "redacted_thinking", "data": signature}]
    return []


def tool_id(call_id: str, ctx: ReplyContext, position: int) -> str:
    """The client's id for the upstream's `call_id` (mapped back on the next request)."""
    return tool_id_to_client(call_id, f"{ctx.message_id}:{position}")


def tool_use_block(item: dict[str, Any], ctx: ReplyContext, position: int) -> Block:
    return {
        "type": "tool_use",
        "id": tool_id(text_of(item.get("call_id")), ctx, position),
        "name": ctx.tool_names.to_client(text_of(item.get("name"))),
        "input": parse_arguments(text_of(item.get("arguments"))),
    }


@dataclass
class Output:
    """The Anthropic content of a reply's `output` items, and what the stop reason needs."""

    blocks: list[Block] = field(default_factory=list)
    calls: int = 0
    text: bool = False
    refusal: bool = False


def output_blocks(output: Any, ctx: ReplyContext, scope: str) -> Output:
    """Items in their order (reasoning before what it produced, as the next request replays
    them); each message part its own text block; items the bridge does not carry skipped."""
    out = Output()
    for item in _dicts(output):
        kind = item.get("type")
        if kind == "reasoning":
            out.blocks.extend(reasoning_blocks(item, scope))
        elif kind == "message":
            for part in _dicts(item.get("content")):
                text, refusal = part_text(part)
                if text:
                    out.blocks.append({"type": "text", "text": text})
                    out.refusal |= refusal
                    out.text |= not refusal
        elif kind == "function_call":
            out.blocks.append(tool_use_block(item, ctx, out.calls))
            out.calls += 1
    return out


def part_text(part: dict[str, Any]) -> tuple[str, bool]:
    """(text, is a refusal) of a message content part."""
    if part.get("type") == "refusal":
        return text_of(part.get("refusal")), True
    if part.get("type") == "output_text":
        return text_of(part.get("text")), False
    return "", False


def stop(response: dict[str, Any], *, tool_calls: bool, refusal: bool) -> tuple[str, str | None]:
    """Anthropic's stop_reason for how the response ended (PROTOCOL.md 10.10)."""
    finish = "stop"
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        # A cut for any other reason is still a cut: the client may continue it.
        finish = "content_filter" if reason == "content_filter" else "length"
    return stop_reason(finish, tool_calls=tool_calls, refusal=refusal)


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage in Chat Completions' shape, so `usage.anthropic_usage` and the proxy's
    accounting read it as they read every other upstream's: the detail names are the same."""
    if not isinstance(usage, dict):
        return None
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "prompt_tokens_details": usage.get("input_tokens_details"),
        "completion_tokens_details": usage.get("output_tokens_details"),
    }


def failure(error: Any) -> UpstreamError:
    """A failed response's `error`, or an `error` event (flat as documented, or nested as some
    servers and gateways send it), as the Anthropic error for its code."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        error = {}
    code = text_of(error.get("code")) or text_of(error.get("type"))
    message = text_of(error.get("message")) or code or "upstream reported a failure"
    body = {"error": {"message": message, "code": code}}
    status = _CODE_STATUS.get(code) or (400 if "image" in code else None)
    if status is None:
        return from_stream_error(body)
    headers = {}
    wait = _TRY_AGAIN.search(message)
    if wait:
        seconds = float(wait.group(1)) / (1000 if wait.group(2).lower() == "ms" else 1)
        headers["retry-after"] = str(max(1, math.ceil(seconds)))
    return from_upstream_response(status, body, headers)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
