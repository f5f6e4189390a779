"""Anthropic shapes the tests build or read back, in one place: the content a stream of events
describes, and the request Claude Code sends after a reply."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def content_blocks(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content the events describe, accumulated without the SDK."""
    blocks: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "content_block_start":
            blocks.append({**event["content_block"], "_json": ""})
        elif event["type"] == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "input_json_delta":
                block["_json"] += delta["partial_json"]
            else:
                field = delta["type"].removesuffix("_delta")
                block[field] += delta[field]
    for block in blocks:
        if block["type"] == "tool_use":
            block["input"] = json.loads(block["_json"])
        del block["_json"]
    return blocks


def follow_up(
    blocks: list[dict[str, Any]], tools: list[Any], *, model: str, max_tokens: int
) -> dict[str, Any]:
    """The next request Claude Code sends after a reply: the reply as history, then a result
    for each of its tool calls."""
    uses = [b for b in blocks if b["type"] == "tool_use"]
    return {
        "model": model,
        "max_tokens": max_tokens,
        "tools": tools,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": blocks},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": b["id"], "content": "ok"} for b in uses
                ],
            },
        ],
    }
