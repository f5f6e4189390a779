"""What Anthropic clients need from a stream (PROTOCOL.md 3.1-3.4), as checks that list
violations: both SDKs crash or lose content on each of these.

`check_stream` takes event dicts, `check_wire` the SSE bytes. An empty list means OK.
"""

from __future__ import annotations

import json
import re
from typing import Any

_EMPTY_BLOCKS: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}
_DELTAS = {
    "text": {"text_delta", "citations_delta"},  # citations: PROTOCOL.md 3.3, 12.1
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
    "redacted_thinking": set(),
    "web_search_tool_result": set(),  # comes whole in its content_block_start (PROTOCOL.md 12.1)
}
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_LINE_END = re.compile(r"\r\n|\r|\n")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _block_problem(block: Any) -> str | None:
    if not isinstance(block, dict):
        return "content_block is not an object"
    kind = block.get("type")
    if kind in _EMPTY_BLOCKS:
        return None if block == _EMPTY_BLOCKS[kind] else f"{kind} block must start empty: {block}"
    if kind in ("tool_use", "server_tool_use"):
        if not (isinstance(block.get("id"), str) and _TOOL_ID.match(block["id"])):
            return f"tool_use id {block.get('id')!r} does not match {_TOOL_ID.pattern}"
        if not isinstance(block.get("name"), str) or block.get("input") != {}:
            return f"tool_use block must start with a name and input {{}}: {block}"
        return None
    if kind == "web_search_tool_result":
        whole = isinstance(block.get("content"), (list, dict))
        return None if whole and isinstance(block.get("tool_use_id"), str) else "bad result block"
    if kind == "redacted_thinking":
        return None if isinstance(block.get("data"), str) else "redacted_thinking without data"
    return f"unknown block type {kind!r}"


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.next_index = 0
        self.open: int | None = None
        self.kind = ""
        self.parts: list[str] = []  # input_json_delta pieces of the open tool_use block
        self.signatures = 0
        self.signed_last = False
        self.deltas_ended = False  # message_delta seen: no more blocks
        self.ended = False

    def fail(self, position: int, problem: str) -> None:
        self.problems.append(f"event {position}: {problem}")

    def first(self, event: dict[str, Any]) -> None:
        if event.get("type") != "message_start":
            self.fail(0, f"first event is {event.get('type')!r}, not message_start")
            return
        message = event.get("message")
        usage = message.get("usage") if isinstance(message, dict) else None
        if not isinstance(usage, dict):
            self.fail(0, "message_start.message.usage is missing")
        elif not (_is_int(usage.get("input_tokens")) and _is_int(usage.get("output_tokens"))):
            self.fail(0, "message_start usage needs integer input_tokens and output_tokens")

    def event(self, position: int, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.ended:
            self.fail(position, f"{kind} after the end of the stream")
        if kind == "ping":
            return
        if kind == "content_block_start":
            self.block_start(position, event)
        elif kind == "content_block_delta":
            self.block_delta(position, event)
        elif kind == "content_block_stop":
            self.block_stop(position, event)
        elif kind == "message_delta":
            self.message_delta(position, event)
        elif kind == "message_stop":
            if not self.deltas_ended:
                self.fail(position, "message_stop without a message_delta before it")
            self.ended = True
        elif kind == "error":
            error = event.get("error")
            if not (isinstance(error, dict) and isinstance(error.get("type"), str)):
                self.fail(position, "error event without error.type")
            self.ended = True
        else:
            self.fail(position, f"unexpected event {kind!r}")

    def block_start(self, position: int, event: dict[str, Any]) -> None:
        if self.deltas_ended:
            self.fail(position, "content block after message_delta")
        if self.open is not None:
            self.fail(position, f"block {self.open} is still open")
        if event.get("index") != self.next_index:
            self.fail(position, f"block index {event.get('index')}, expected {self.next_index}")
        problem = _block_problem(event.get("content_block"))
        if problem:
            self.fail(position, problem)
        block = event.get("content_block")
        self.kind = block.get("type", "") if isinstance(block, dict) else ""
        self.open = self.next_index
        self.next_index += 1
        self.parts = []
        self.signatures = 0
        self.signed_last = False

    def block_delta(self, position: int, event: dict[str, Any]) -> None:
        if self.open is None or event.get("index") != self.open:
            self.fail(position, f"delta for block {event.get('index')}, open: {self.open}")
            return
        delta = event.get("delta")
        delta_type = delta.get("type") if isinstance(delta, dict) else None
        if delta_type not in _DELTAS.get(self.kind, set()):
            self.fail(position, f"{delta_type} in a {self.kind} block")
            return
        assert isinstance(delta, dict)
        self.signed_last = delta_type == "signature_delta"
        if delta_type == "signature_delta":
            self.signatures += 1
        elif delta_type == "input_json_delta":
            if not isinstance(delta.get("partial_json"), str):
                self.fail(position, "input_json_delta without a partial_json string")
            else:
                self.parts.append(delta["partial_json"])
        elif delta_type == "citations_delta":
            if not isinstance(delta.get("citation"), dict):
                self.fail(position, "citations_delta without a citation")
        elif not isinstance(delta.get(delta_type.removesuffix("_delta")), str):
            self.fail(position, f"{delta_type} without its text")

    def block_stop(self, position: int, event: dict[str, Any]) -> None:
        if self.open is None or event.get("index") != self.open:
            self.fail(position, f"stop for block {event.get('index')}, open: {self.open}")
            return
        if self.kind in ("tool_use", "server_tool_use"):
            text = "".join(self.parts)
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                self.fail(position, f"tool input is not a JSON object: {text!r}")
        elif self.kind == "thinking" and not (self.signatures == 1 and self.signed_last):
            self.fail(position, "thinking block needs exactly one signature_delta, last")
        self.open = None

    def message_delta(self, position: int, event: dict[str, Any]) -> None:
        if self.open is not None:
            self.fail(position, f"message_delta while block {self.open} is open")
        delta = event.get("delta")
        if not (isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str)):
            self.fail(position, "message_delta without a stop_reason")
        usage = event.get("usage")
        if not (isinstance(usage, dict) and _is_int(usage.get("output_tokens"))):
            self.fail(position, "message_delta without integer usage.output_tokens")
        self.deltas_ended = True


def check_stream(events: list[dict[str, Any]]) -> list[str]:
    """Protocol violations in a list of Anthropic stream events."""
    if not events:
        return ["no events"]
    checker = _Checker()
    checker.first(events[0])
    start = 1 if events[0].get("type") == "message_start" else 0
    for position in range(start, len(events)):
        checker.event(position, events[position])
    if not checker.ended:
        checker.problems.append("the stream ends without message_stop or error")
    return checker.problems


def check_wire(body: bytes) -> list[str]:
    """Violations in SSE bytes: every event named, with a data line whose JSON `type` is the
    name, and ended by a blank line (an unterminated last event is never dispatched)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [f"not UTF-8: {exc}"]
    problems: list[str] = []
    name: str | None = None
    data: list[str] = []
    pending = False
    count = 0
    lines = _LINE_END.split(text)
    # A body ending in a line end leaves "" last: that is the end of the last line, not a line.
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            pending = True
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            continue
        if pending:
            count += 1
            problems.extend(f"event {count}: {p}" for p in _wire_event(name, data))
        name, data, pending = None, [], False
    if pending:
        problems.append(f"event {count + 1}: not ended by a blank line")
    if count == 0 and not problems:
        problems.append("no events")
    return problems


def _wire_event(name: str | None, data: list[str]) -> list[str]:
    if name is None:
        return ["no event: line"]
    if not data:
        return [f"{name}: no data: line"]
    try:
        payload = json.loads("\n".join(data))
    except ValueError:
        return [f"{name}: data is not JSON"]
    if not isinstance(payload, dict) or payload.get("type") != name:
        return [
            f"{name}: data type is {payload.get('type') if isinstance(payload, dict) else None!r}"
        ]
    return []
