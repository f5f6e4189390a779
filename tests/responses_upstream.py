"""OpenAI Responses API bodies and event streams for the scripted upstream (`upstream.py`).

Shaped like the captures in ../shared/fixtures/openai_responses (PROTOCOL.md 10.6, 10.7): a
reply is a list of output items; `response` wraps them in the JSON body, `stream` writes the
events a server sends for them (`added`, the deltas, `done`, then the terminal event)::

    upstream.reply(JSONReply(response([message_item("Hi!")])))
    upstream.reply(SSEReply(stream([reasoning_item("rs_1", ["Thinking"], "blob"),
                                    call_item("call_1", "get_weather", {"city": "Paris"})])))
"""

from __future__ import annotations

import json
from typing import Any

RESPONSE_ID = "resp_0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708"
MODEL = "gpt-5-2025-08-07"
Item = dict[str, Any]


def usage(
    input: int = 20, output: int = 6, *, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    }


def message_item(text: str, *, item_id: str = "msg_1", refusal: bool = False) -> Item:
    part = (
        {"type": "refusal", "refusal": text}
        if refusal
        else {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    )
    return {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }


def call_item(call_id: str, name: str, arguments: dict[str, Any] | str) -> Item:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": "fc_" + call_id.removeprefix("call_"),
        "type": "function_call",
        "status": "completed",
        "arguments": text,
        "call_id": call_id,
        "name": name,
    }


def reasoning_item(item_id: str, summaries: list[str], encrypted: str | None) -> Item:
    item: Item = {
        "id": item_id,
        "type": "reasoning",
        "content": [],
        "summary": [{"type": "summary_text", "text": s} for s in summaries],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def response(
    output: list[Item],
    *,
    status: str = "completed",
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
    used: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole Response object, as a non-streaming answer or a terminal event carries it."""
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1782400000,
        "status": status,
        "completed_at": None if status != "completed" else 1782400003,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "store": False,
        "usage": used if used is not None else usage(),
    }


def event(data: dict[str, Any]) -> str:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"


def opening() -> list[str]:
    """`response.created` and `response.in_progress`: no output, no usage yet."""
    begun = {**response([], status="in_progress"), "usage": None}
    return [
        event({"type": t, "response": begun}) for t in ("response.created", "response.in_progress")
    ]


def item_events(item: Item, index: int, pieces: int = 3) -> list[str]:
    """What a server streams for one output item: `added` (empty), its deltas in `pieces`
    fragments, then `done` with the whole item."""
    kind = item["type"]
    empty: Item = {**item, "status": "in_progress"}
    deltas: list[dict[str, Any]] = []
    if kind == "message":
        empty["content"] = []
        part = item["content"][0]
        field = "refusal" if part["type"] == "refusal" else "text"
        name = "response.refusal.delta" if field == "refusal" else "response.output_text.delta"
        deltas = [
            {"type": name, "item_id": item["id"], "content_index": 0, "delta": d}
            for d in split(part[field], pieces)
        ]
    elif kind == "function_call":
        empty["arguments"] = ""
        deltas = [
            {"type": "response.function_call_arguments.delta", "item_id": item["id"], "delta": d}
            for d in split(item["arguments"], pieces)
        ]
    elif kind == "reasoning":
        empty["summary"] = []
        for number, summary in enumerate(item["summary"]):
            deltas += [
                {
                    "type": "response.reasoning_summary_text.delta",
                    "item_id": item["id"],
                    "summary_index": number,
                    "delta": d,
                }
                for d in split(summary["text"], pieces)
            ]
    events = [
        {"type": "response.output_item.added", "item": empty},
        *deltas,
        {"type": "response.output_item.done", "item": item},
    ]
    return [event({**e, "output_index": index}) for e in events]


def stream(
    output: list[Item],
    *,
    terminal: str = "response.completed",
    status: str = "completed",
    incomplete: str | None = None,
    used: dict[str, Any] | None = None,
) -> list[str]:
    """The whole event stream for `output`, one SSE event a chunk; no `[DONE]` (OpenAI sends
    none)."""
    items = [e for index, item in enumerate(output) for e in item_events(item, index)]
    final = response(output, status=status, incomplete=incomplete, used=used)
    return [*opening(), *items, event({"type": terminal, "response": final})]


def failed(code: str, message: str) -> str:
    """A `response.failed` terminal event."""
    error = {"code": code, "message": message}
    return event(
        {"type": "response.failed", "response": response([], status="failed", error=error)}
    )


def error_event(code: str, message: str) -> str:
    """The documented flat `error` event."""
    return event({"type": "error", "code": code, "message": message, "param": None})


def split(text: str, pieces: int) -> list[str]:
    """`text` in about `pieces` fragments (one when it is short), never an empty one."""
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]
