"""OpenAI chat completion -> Anthropic message (PROTOCOL.md 8.2, 8.4, 8.5)."""

from __future__ import annotations

from typing import Any

from ..models.openai import ChatCompletion
from .context import ReplyContext
from .errors import UpstreamError
from .ids import Carried, proxy_signature, tool_id_to_client
from .jsonfix import parse_arguments
from .reasoning import reasoning_signature, reasoning_text, redacted_reasoning, tool_signatures
from .stop import stop_reason
from .usage import anthropic_usage, with_timings


def translate_response(
    completion: ChatCompletion, ctx: ReplyContext, output_estimate: int = 0
) -> dict[str, Any]:
    if not completion.choices or completion.choices[0].message is None:
        raise UpstreamError("upstream returned no choices", status=502, type="api_error")
    choice = completion.choices[0]
    message = choice.message
    assert message is not None
    content: list[dict[str, Any]] = []

    thinking, _ = reasoning_text(message)
    if thinking:
        signature = reasoning_signature(message) or proxy_signature(thinking)
        content.append({"type": "thinking", "thinking": thinking, "signature": signature})
    content.extend({"type": "redacted_thinking", "data": d} for d in redacted_reasoning(message))

    text = message.content or message.refusal or ""
    if text:
        content.append({"type": "text", "text": text})

    signatures = tool_signatures(message.reasoning_details)
    for position, call in enumerate(message.tool_calls or ()):
        function = call.function
        name = function.name if function and function.name else ""
        arguments = function.arguments if function and function.arguments else ""
        # Thought signatures the upstream wants back ride in the id (see `ids`).
        extra = (call.model_extra or {}).get("extra_content")
        carried = Carried(
            extra_content=extra if isinstance(extra, dict) else None,
            reasoning_detail=signatures.get(call.id or ""),
        )
        content.append(
            {
                "type": "tool_use",
                "id": tool_id_to_client(call.id, f"{ctx.message_id}:{position}", carried),
                "name": ctx.tool_names.to_client(name),
                "input": parse_arguments(arguments),
            }
        )

    reason, sequence = stop_reason(
        choice.finish_reason,
        tool_calls=bool(message.tool_calls),
        refusal=bool(message.refusal) and not message.content,
        matched_stop=choice.stop_reason,
        stop_sequences=list(ctx.stop_sequences),
        native_finish_reason=choice.native_finish_reason,
    )
    usage = completion.usage
    if usage:
        usage = with_timings(usage, (completion.model_extra or {}).get("timings"))
    reply = {
        "id": ctx.message_id,
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(usage, ctx, output_estimate),
    }
    return ctx.added_nulls.message(reply)  # what strict schemas added (nulls.py)
