"""check_stream and check_wire: a valid stream passes, each defect the SDKs trip on is named."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from claude_bridge.proxy.core.checker import check_stream, check_wire
from claude_bridge.proxy.core.sse import encode_event

Events = list[dict[str, Any]]


def _delta(index: int, **delta: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


VALID: Events = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    },
    {"type": "ping"},
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    },
    _delta(0, type="thinking_delta", thinking="hmm"),
    _delta(0, type="signature_delta", signature="sig"),
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    _delta(1, type="text_delta", text="hi"),
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "call_1", "name": "bash", "input": {}},
    },
    _delta(2, type="input_json_delta", partial_json='{"a":'),
    _delta(2, type="input_json_delta", partial_json="1}"),
    {"type": "content_block_stop", "index": 2},
    {
        "type": "content_block_start",
        "index": 3,
        "content_block": {"type": "redacted_thinking", "data": "xyz"},
    },
    {"type": "content_block_stop", "index": 3},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9},
    },
    {"type": "message_stop"},
]


def _changed(change: Callable[[Events], Any]) -> Events:
    events = copy.deepcopy(VALID)
    change(events)
    return events


def test_a_valid_stream_passes() -> None:
    assert check_stream(VALID) == []


def test_an_error_may_end_the_stream_anywhere() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert check_stream([*VALID[:8], error]) == []
    assert check_stream([VALID[0], error]) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e.pop(0), "not message_start"),
        (lambda e: e[0]["message"].pop("usage"), "usage is missing"),
        (lambda e: e[0]["message"]["usage"].update(output_tokens=None), "integer input_tokens"),
        (lambda e: e[0]["message"]["usage"].update(input_tokens=True), "integer input_tokens"),
        (lambda e: e.insert(2, copy.deepcopy(e[0])), "unexpected event 'message_start'"),
        (lambda e: e[6].update(index=2), "block index 2, expected 1"),
        (lambda e: e.pop(5), "block 0 is still open"),
        (lambda e: e[6]["content_block"].pop("text"), "text block must start empty"),
        (lambda e: e[2]["content_block"].pop("signature"), "thinking block must start empty"),
        (lambda e: e[9]["content_block"].update(input={"a": 1}), "input {}"),
        (lambda e: e[9]["content_block"].update(id="functions.add:0"), "does not match"),
        (lambda e: e[13]["content_block"].update(type="mcp_tool_use"), "unknown block type"),
        (lambda e: e[7].update(index=0), "delta for block 0, open: 1"),
        (lambda e: e[7]["delta"].update(type="thinking_delta"), "thinking_delta in a text block"),
        (lambda e: e[7]["delta"].pop("text"), "text_delta without its text"),
        (lambda e: e[11]["delta"].update(partial_json="2"), "not a JSON object"),
        (lambda e: e[11]["delta"].update(partial_json="1,"), "not a JSON object"),
        (lambda e: e[11]["delta"].pop("partial_json"), "without a partial_json"),
        (lambda e: e.pop(4), "exactly one signature_delta"),
        (lambda e: e.insert(4, copy.deepcopy(e[4])), "exactly one signature_delta"),
        (lambda e: e.insert(5, copy.deepcopy(e[3])), "exactly one signature_delta"),
        (lambda e: e[8].update(index=0), "stop for block 0, open: 1"),
        (lambda e: e.pop(14), "message_delta while block 3 is open"),
        (lambda e: e[15]["delta"].update(stop_reason=None), "without a stop_reason"),
        (lambda e: e[15].pop("usage"), "integer usage.output_tokens"),
        (lambda e: e.insert(16, copy.deepcopy(e[6])), "content block after message_delta"),
        (lambda e: e.pop(15), "message_stop without a message_delta"),
        (lambda e: e.pop(), "ends without message_stop or error"),
        (lambda e: e.append({"type": "ping"}), "ping after the end"),
        (lambda e: e.append({"type": "error", "error": {}}), "error after the end"),
        (lambda e: e.append({"type": "error", "error": {}}), "error event without error.type"),
    ],
)
def test_each_defect_is_named(change: Callable[[Events], Any], problem: str) -> None:
    problems = check_stream(_changed(change))
    assert any(problem in p for p in problems), problems


def test_no_events() -> None:
    assert check_stream([]) == ["no events"]


WIRE = b"".join(encode_event(event) for event in VALID)


def test_valid_wire_passes() -> None:
    assert check_wire(WIRE) == []
    assert check_wire(WIRE.replace(b"\n", b"\r\n")) == []
    assert check_wire(b": comment\n\n" + WIRE) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'data: {"type":"ping"}\n\n', "no event: line"),
        (b"event: ping\n\n", "no data: line"),
        (b"event: ping\ndata: {not json\n\n", "not JSON"),
        (b'event: ping\ndata: {"type":"pong"}\n\n', "data type is 'pong'"),
        (b"event: ping\ndata: [1]\n\n", "data type is None"),
        (WIRE[:-1], "not ended by a blank line"),
        (WIRE[:-2], "not ended by a blank line"),
        (b"", "no events"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_wire_defects_are_named(body: bytes, problem: str) -> None:
    problems = check_wire(body)
    assert any(problem in p for p in problems), problems
