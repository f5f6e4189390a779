"""Searches answered from a journal (`serve --upstream-replay`): what the client was sent.

A recorded answer holds each search the proxy ran as a `server_tool_use` block (the query) and
its `web_search_tool_result` (the results, whole in their `encrypted_content`, or the error), so
a replay needs no backend and no network, as its upstream answers need none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.web_search import NAME, Result, SearchFailed, outcome_of
from ..journal.records import Record

Outcome = list[Result] | SearchFailed


def recorded_searches(records: Iterable[Record]) -> dict[str, list[Outcome]]:
    """Every recorded search's outcomes by query, oldest first."""
    found: dict[str, list[Outcome]] = {}
    for record in sorted(records, key=lambda r: r.id):
        for query, outcome in _searches(_blocks(record)):
            found.setdefault(query, []).append(outcome)
    return found


def _blocks(record: Record) -> list[dict[str, Any]]:
    reply = record.reply
    if reply is None:
        return []
    if reply.events is None:
        content = reply.body.get("content") if isinstance(reply.body, dict) else None
        return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    blocks: dict[Any, dict[str, Any]] = {}
    inputs: dict[Any, list[str]] = {}
    for _, event in reply.events:
        kind, index = event.get("type"), event.get("index")
        if kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            blocks[index] = dict(event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            piece = event["delta"].get("partial_json")
            if isinstance(piece, str):
                inputs.setdefault(index, []).append(piece)
    for index, pieces in inputs.items():
        if index in blocks:
            try:
                blocks[index]["input"] = json.loads("".join(pieces))
            except ValueError:
                continue
    return list(blocks.values())


def _searches(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, Outcome]]:
    queries: dict[Any, str] = {}
    for block in blocks:
        given = block.get("input")
        query = given.get("query") if isinstance(given, dict) else None
        is_search = block.get("type") == "server_tool_use" and block.get("name") == NAME
        if is_search and isinstance(query, str):
            queries[block.get("id")] = query.strip()
    for block in blocks:
        if block.get("type") == "web_search_tool_result" and block.get("tool_use_id") in queries:
            yield queries[block["tool_use_id"]], outcome_of(block.get("content"))
