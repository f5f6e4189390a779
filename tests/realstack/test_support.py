"""The tier's own checks must catch the stream faults that make Claude Code fail silently
(shared/REALSTACK.md): no content_block_stop, no `event:` lines, an error event, a missing
message_start. No artefacts needed."""

from __future__ import annotations

import json
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest

from .support import LOOPBACK, Recorder, parse_sse, stream_problems

pytestmark = pytest.mark.realstack


def sse(*events: tuple[str | None, dict[str, Any]]) -> bytes:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}\n\n")
    return "".join(out).encode()


START = ("message_start", {"type": "message_start", "message": {"id": "msg_1", "content": []}})
BLOCK = (
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
DELTA = (
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
)
STOP_BLOCK = ("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_DELTA = (
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
)
STOP = ("message_stop", {"type": "message_stop"})
GOOD = (START, BLOCK, DELTA, STOP_BLOCK, MESSAGE_DELTA, STOP)


def test_a_good_stream_has_no_problems() -> None:
    assert stream_problems(parse_sse(sse(*GOOD))) == []


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        ((START, BLOCK, DELTA, MESSAGE_DELTA, STOP), "never stopped"),
        ((BLOCK, DELTA, STOP_BLOCK, MESSAGE_DELTA, STOP), "message_start"),
        (
            (*GOOD[:-1], ("error", {"type": "error", "error": {"type": "overloaded_error"}})),
            "error event",
        ),
        ((START, BLOCK, DELTA, STOP_BLOCK, STOP), "message_delta"),
    ],
)
def test_faults_are_caught(events: tuple[tuple[str, dict[str, Any]], ...], problem: str) -> None:
    problems = stream_problems(parse_sse(sse(*events)))
    assert any(problem in p for p in problems), problems


def test_data_lines_without_event_lines_are_caught() -> None:
    body = sse(*((None, data) for _, data in GOOD))
    assert any("event: line" in p for p in stream_problems(parse_sse(body)))


def test_recorder_forwards_a_stream_and_records_it() -> None:
    chunks = [b"data: 1\n\n", b"data: 2\n\n"]

    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    upstream = ThreadingHTTPServer((LOOPBACK, 0), Upstream)
    Thread(target=upstream.serve_forever, daemon=True).start()
    recorder = Recorder(f"http://{LOOPBACK}:{upstream.server_address[1]}")
    try:
        request = urllib.request.Request(
            f"{recorder.url}/v1/chat/completions?x=1",
            data=b'{"a": 1}',
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == b"".join(chunks)
        (exchange,) = recorder.since(0)
        assert (exchange.method, exchange.path, exchange.status) == (
            "POST",
            "/v1/chat/completions?x=1",
            200,
        )
        assert exchange.request_json() == {"a": 1}
        assert exchange.response_body == b"".join(chunks)
        assert exchange.complete
    finally:
        recorder.close()
        upstream.shutdown()
        upstream.server_close()
