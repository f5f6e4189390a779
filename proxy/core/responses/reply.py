"""A Responses JSON reply -> Anthropic message (PROTOCOL.md 10.6, 10.10); the counterpart of
`core.response.translate_response`."""

from __future__ import annotations

from typing import Any

from ..context import ReplyContext
from ..errors import UpstreamError
from ..usage import anthropic_usage
from .output import chat_usage, failure, output_blocks, stop

GENERIC_SCOPE = "generic"
"""The carrier scope of the generic provider profile (`providers.GENERIC.name`)."""


def translate_reply(
    response: Any, ctx: ReplyContext, output_estimate: int = 0, *, scope: str = GENERIC_SCOPE
) -> dict[str, Any]:
    """The Anthropic message for a 2xx Responses body; a failed response raises the mapped
    `UpstreamError`. `scope` is the request's `options.profile.name` (see `carrier`)."""
    if not isinstance(response, dict):
        raise UpstreamError("upstream answer is not a Responses object", status=502)
    status = response.get("status")
    if status == "failed" or (response.get("error") and not response.get("output")):
        raise failure(response.get("error") or response)
    if status in ("cancelled", "queued", "in_progress"):
        raise UpstreamError(f"upstream response is {status}, not complete", status=502)
    if not isinstance(response.get("output"), list):
        raise UpstreamError("upstream answer has no output", status=502)
    output = output_blocks(response["output"], ctx, scope)
    reason, sequence = stop(
        response, tool_calls=output.calls > 0, refusal=output.refusal and not output.text
    )
    usage = chat_usage(response.get("usage"))
    message = {
        "id": ctx.message_id,
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": output.blocks,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(usage, ctx, output_estimate),
    }
    return ctx.added_nulls.message(message)
