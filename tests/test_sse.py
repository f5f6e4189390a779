"""SSEDecoder (upstream bytes -> events) and encode_event (Anthropic events -> bytes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claude_bridge.proxy.core.sse import SSEDecoder, SSEEvent, encode_event


def _decode(*pieces: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.decode(piece)]
    return events + decoder.flush()


def test_events_with_and_without_a_name() -> None:
    body = b"event: message_start\ndata: 1\n\ndata: 2\n\n"
    assert _decode(body) == [SSEEvent("message_start", "1"), SSEEvent(None, "2")]


def test_data_lines_join_with_newlines() -> None:
    assert _decode(b"data: a\ndata: b\ndata:\n\n") == [SSEEvent(None, "a\nb\n")]


def test_comments_and_blank_keep_alives_give_nothing() -> None:
    body = b": OPENROUTER PROCESSING\n\n\n\n: ping\ndata: x\n: inside\n\n\n"
    assert _decode(body) == [SSEEvent(None, "x")]


def test_a_name_without_data_is_not_an_event() -> None:
    assert _decode(b"event: ping\n\ndata: x\n\n") == [SSEEvent(None, "x")]


def test_field_syntax() -> None:
    # No colon: the whole line names the field. One space after the colon is dropped, not two.
    body = b"data\n\ndata:x\n\ndata:  x\n\nid: 7\nretry: 10\nfoo: bar\ndata: y\n\n"
    assert [e.data for e in _decode(body)] == ["", "x", " x", "y"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_endings(ending: bytes) -> None:
    body = ending.join([b"event: e", b"data: 1", b"", b"data: 2", b"data: 3", b"", b""])
    assert _decode(body) == [SSEEvent("e", "1"), SSEEvent(None, "2\n3")]


TRICKY = (
    b": comment\r\n"
    b'data: {"t":"caf\xc3\xa9 \xf0\x9f\x91\x8b \xe6\x97\xa5\xe6\x9c\xac \xe2\x80\xa8 end"}\r\n'
    b"\r\n"
    b"event: named\r"
    b"data: cr only\r"
    b"\r"
    b"data: lf\n"
    b"data: second line\n"
    b"\n"
    b"data: [DONE]\r\n\r\n"
)


def test_tricky_body() -> None:
    events = _decode(TRICKY)
    assert events == [
        SSEEvent(None, '{"t":"café 👋 日本 \u2028 end"}'),
        SSEEvent("named", "cr only"),
        SSEEvent(None, "lf\nsecond line"),
        SSEEvent(None, "[DONE]"),
    ]


def test_every_two_and_three_way_split_gives_the_same_events() -> None:
    whole = _decode(TRICKY)
    size = len(TRICKY)
    for first in range(size + 1):
        assert _decode(TRICKY[:first], TRICKY[first:]) == whole, first
        for second in range(first, size + 1, 7):
            pieces = TRICKY[:first], TRICKY[first:second], TRICKY[second:]
            assert _decode(*pieces) == whole, (first, second)


def test_one_byte_pieces() -> None:
    assert _decode(*(TRICKY[i : i + 1] for i in range(len(TRICKY)))) == _decode(TRICKY)


def test_cr_at_the_end_of_a_chunk_then_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\r") == []
    assert decoder.decode(b"\ndata: b\r") == []
    assert decoder.decode(b"\n") == []
    assert decoder.decode(b"") == []
    assert decoder.decode(b"\r\n") == [SSEEvent(None, "a\nb")]


def test_flush_dispatches_what_the_blank_line_would_have() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: [DONE]") == []
    assert decoder.flush() == [SSEEvent(None, "[DONE]")]
    assert decoder.decode(b"data: next\n") == []
    assert decoder.flush() == [SSEEvent(None, "next")]
    assert decoder.flush() == []


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert _decode(b"data: \xff\xfeok\n\n") == [SSEEvent(None, "\ufffd\ufffdok")]


def test_encode_event_wire_format() -> None:
    assert encode_event({"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "é👋"},
    }
    assert encode_event(delta) == (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\xc3\xa9\xf0\x9f\x91\x8b"}}\n\n'
    )


def test_encode_event_escapes_lone_surrogates() -> None:
    wire = encode_event({"type": "x", "text": "cut \ud83d"})
    assert b"\\ud83d" in wire
    assert json.loads(wire.split(b"data: ")[1]) == {"type": "x", "text": "cut \ud83d"}


def test_encoded_events_decode_back() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "content": []}},
        {"type": "content_block_delta", "index": 0, "delta": {"text": "a\nb\r\nc \u2028 d"}},
        {"type": "message_stop"},
    ]
    decoded = _decode(b"".join(encode_event(event) for event in events))
    assert [(e.event, json.loads(e.data)) for e in decoded] == [(e["type"], e) for e in events]


def test_a_whole_data_event_in_one_read_after_something_pending() -> None:
    """Most reads are one whole `data:` event and take a short path; not when a name, a data
    line or part of a line is pending from the read before."""
    decoder = SSEDecoder()
    assert decoder.decode(b"event: named\n") == []
    assert decoder.decode(b"data: 1\n\n") == [SSEEvent("named", "1")]
    assert decoder.decode(b"data: a\n") == []
    assert decoder.decode(b"data: b\n\n") == [SSEEvent(None, "a\nb")]
    assert decoder.decode(b"da") == []
    assert decoder.decode(b"ta: c\n\n") == [SSEEvent(None, "c")]
    assert decoder.decode(b"data: d\r") == []
    assert decoder.decode(b"\ndata: e\n\n") == [SSEEvent(None, "d\ne")]
    assert decoder.decode(b"data: x: y\xff\n\n") == [SSEEvent(None, "x: y\ufffd")]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "x", "n": 2**64, "m": -(2**63) - 1},  # past orjson's integers
        {"type": "x", "usage": {1: 2}},  # a key that is not a string
        {"type": "x", "f": [1.0, 0.5, -0.0, 123456789.125], "t": '\u2028\x00\x1f\x7f"\\/'},
    ],
)
def test_encode_event_writes_what_pythons_encoder_writes(event: dict[str, Any]) -> None:
    python = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    assert encode_event(event) == b"event: x\ndata: " + python + b"\n\n"
