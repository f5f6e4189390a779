"""Upstream bytes are untrusted input: whatever a broken or hostile upstream sends, the client
gets a valid Anthropic answer, over real HTTP (the scripted upstream of tests/upstream.py).

* malformed optional fields (usage details, timings) are ignored;
* what cannot be translated is a 502 `api_error` naming the problem before streaming began, an
  `error` event after the events already translated once it began: JSON nested 100,000 levels
  deep, redirects and other statuses that are no answer, unknown content encodings, corrupt
  or bomb-like compressed bodies, and anything that breaks the translation itself;
* lone UTF-16 surrogates (`"\\ud800"`, valid JSON) become U+FFFD, so the answer is UTF-8;
* compressed bodies are inflated in bounded pieces, and the relay reads ahead a bounded number
  of bytes and lets other requests run between batches (figures: bench/hostile_upstream.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any, cast

import httpx
import pytest
from conftest import Bridge, bridge_settings, make_http, serving
from shapes import content_blocks
from test_faults import (  # the fault tests' checks: the same contract
    assert_error,
    body,
    parse_events,
    stream_error,
)
from upstream import (
    DONE,
    FakeUpstream,
    JSONReply,
    RawReply,
    SSEReply,
    chunk,
    completion,
    openai_usage,
    text_stream,
)

from claude_bridge.proxy import inflate
from claude_bridge.proxy import pipeline as pipeline_module
from claude_bridge.proxy import upstream as upstream_module
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.dialects import chat as chat_dialect
from claude_bridge.proxy.core.ids import tool_id_to_upstream
from claude_bridge.proxy.core.stream import StreamTranslator
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.tokenizer import count_text

LONE = "\\ud800"  # a lone surrogate as JSON escapes it: valid JSON, no UTF-8 form
MARK = "SURROGATE_HERE"
DEEP = 100_000


@pytest.fixture(scope="module")
def passthrough_bridge(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    yield from serving(upstream_server.base_url, mode="anthropic")


@pytest.fixture
def passthrough(passthrough_bridge: Bridge, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with make_http(passthrough_bridge) as http:
        yield http


def with_lone_surrogate(value: Any) -> str:
    """`value` as JSON text, `MARK` in it replaced by a lone surrogate's escape."""
    return json.dumps(value).replace(MARK, LONE)


def sse_data(text: str) -> str:
    return f"data: {text}\n\n"


def deep_json() -> str:
    return '{"a":' * DEEP + "1" + "}" * DEEP


def texts(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(p["delta"].get("text", "") for n, p in events if n == "content_block_delta")


# -- malformed optional fields ------------------------------------------------------------

NOT_OBJECTS = ["text", [1, 2], 5, None, True]
USAGE_DETAILS = ["prompt_tokens_details", "completion_tokens_details", "timings"]


@pytest.mark.parametrize("value", NOT_OBJECTS, ids=repr)
@pytest.mark.parametrize("field", USAGE_DETAILS)
def test_usage_details_that_are_not_objects_are_ignored(
    http: httpx.Client, upstream: FakeUpstream, field: str, value: Any
) -> None:
    usage = {**openai_usage(prompt=12, completion=5), field: value}
    upstream.reply(
        JSONReply(completion("Hi", usage=usage)), SSEReply(text_stream(["Hi"], usage=usage))
    )

    answer = http.post("/v1/messages", json=body())
    assert answer.status_code == 200, answer.text
    counts = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert answer.json()["usage"] == {**counts, "output_tokens": 5}

    events = parse_events(http.post("/v1/messages", json=body(stream=True)).content)
    assert events[-1][0] == "message_stop" and texts(events) == "Hi"
    assert events[-2][1]["usage"] == {**counts, "output_tokens": 5}


@pytest.mark.parametrize("value", NOT_OBJECTS[:3], ids=repr)
def test_usage_and_timings_that_are_not_objects_are_ignored(
    http: httpx.Client, upstream: FakeUpstream, value: Any
) -> None:
    upstream.reply(
        JSONReply({**completion("Hi"), "usage": value}),
        JSONReply({**completion("Hi"), "timings": value}),
    )
    for _ in range(2):
        answer = http.post("/v1/messages", json=body())
        assert answer.status_code == 200, answer.text
        assert answer.json()["content"] == [{"type": "text", "text": "Hi"}]


# -- lone surrogates ----------------------------------------------------------------------


def surrogate_completion(where: str) -> dict[str, Any]:
    if where == "content":
        return completion(f"Hi {MARK}")
    if where == "reasoning_content":
        return completion("Hi", reasoning_content=f"think {MARK}")
    call_id = f"call_{MARK}" if where == "tool id" else "call_1"
    name = f"run{MARK}" if where == "tool name" else "run"
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
    return completion(None, tool_calls=[call], finish_reason="tool_calls")


def surrogate_stream(where: str) -> list[str]:
    if where in ("content", "reasoning_content"):
        delta = {where: f"Hi {MARK}"}
        return [sse_data(with_lone_surrogate(json.loads(chunk(delta)[6:]))), *text_stream(["!"])]
    call = surrogate_completion(where)["choices"][0]["message"]["tool_calls"][0]
    fragment = json.loads(chunk({"tool_calls": [{"index": 0, **call}]})[6:])
    return [sse_data(with_lone_surrogate(fragment)), chunk(finish_reason="tool_calls"), DONE]


@pytest.mark.parametrize("where", ["content", "reasoning_content", "tool id", "tool name"])
def test_lone_surrogates_become_replacement_characters(
    http: httpx.Client, upstream: FakeUpstream, where: str
) -> None:
    upstream.reply(
        RawReply(with_lone_surrogate(surrogate_completion(where)), content_type="application/json"),
        SSEReply(surrogate_stream(where)),
    )

    answer = http.post("/v1/messages", json=body())
    assert answer.status_code == 200, answer.text
    answer.content.decode("utf-8")  # strict: the answer is UTF-8
    raw = http.post("/v1/messages", json=body(stream=True)).content
    events = parse_events(raw)  # strict UTF-8, wire format and event grammar
    assert events[-1][0] == "message_stop"

    for blocks in (answer.json()["content"], content_blocks(p for _, p in events)):
        if where == "tool id":  # encoded for the client; the upstream gets back what it can
            assert tool_id_to_upstream(blocks[-1]["id"]) == "call_\ufffd"
        else:
            assert "\ufffd" in json.dumps(blocks, ensure_ascii=False)


def test_lone_surrogate_in_an_upstream_error_keeps_its_status(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    error = with_lone_surrogate({"error": {"message": f"bad {MARK}", "type": "invalid"}})
    refusal = RawReply(error, status=400, content_type="application/json")
    upstream.reply(refusal, refusal, SSEReply([chunk({"content": "Half"}), sse_data(error)]))

    for stream in (False, True):
        message = assert_error(
            http.post("/v1/messages", json=body(stream=stream)), 400, "invalid_request_error"
        )
        assert message == "bad \ufffd"
    message, events = stream_error(http, "api_error")
    assert message == "bad \ufffd" and texts(events) == "Half"


# -- what cannot be translated ------------------------------------------------------------


def test_deeply_nested_json_answer_is_a_502(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(RawReply(deep_json(), content_type="application/json"))

    message = assert_error(http.post("/v1/messages", json=body()), 502, "api_error")
    assert "nested deeper than" in message


def test_deeply_nested_chunk_ends_the_stream_after_what_was_translated(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.reply(
        SSEReply([chunk({"content": "Half"}), sse_data(deep_json()), *text_stream(["!"])])
    )

    message, events = stream_error(http, "api_error")
    assert "nested deeper than" in message and texts(events) == "Half"


def test_deeply_nested_passthrough_answers(
    passthrough: httpx.Client, upstream: FakeUpstream
) -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 1, "output_tokens": 1}}}
    upstream.reply(
        RawReply(deep_json(), content_type="application/json"),
        SSEReply([f"event: message_start\ndata: {json.dumps(start)}\n\n", sse_data(deep_json())]),
    )

    assert "nested deeper than" in assert_error(
        passthrough.post("/v1/messages", json=body()), 502, "api_error"
    )
    raw = passthrough.post("/v1/messages", json=body(stream=True)).content
    assert raw.endswith(b"\n\n") and b"event: error" in raw and b"nested deeper than" in raw


def test_a_completion_of_the_wrong_shape_is_a_502_naming_the_field(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply({**completion("Hi"), "choices": "none"}))

    message = assert_error(http.post("/v1/messages", json=body()), 502, "api_error")
    assert "not a chat completion" in message and "choices" in message


def test_a_translation_that_breaks_is_a_502_or_an_error_event(
    http: httpx.Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the upstream sends that the translation did not foresee (here: a bug put in
    its way), the client gets an Anthropic error, never a 500 or a stream cut mid-body."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(chat_dialect, "translate_response", broken)
    monkeypatch.setattr(StreamTranslator, "_end", broken)
    upstream.reply(JSONReply(completion("Hi")), SSEReply(text_stream(["Half"])))

    message = assert_error(http.post("/v1/messages", json=body()), 502, "api_error")
    assert "could not be translated" in message
    message, events = stream_error(http, "api_error")
    assert "could not be translated" in message and texts(events) == "Half"


# -- statuses that are no answer ----------------------------------------------------------

LOCATION = "https://evil.example:8443/v1/chat/completions?token=SECRET-IN-QUERY"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_nor_relayed(
    http: httpx.Client, upstream: FakeUpstream, status: int, stream: bool
) -> None:
    upstream.reply(RawReply("moved", status=status, headers={"location": LOCATION}))

    message = assert_error(http.post("/v1/messages", json=body(stream=stream)), 502, "api_error")
    assert f"HTTP {status}" in message and "evil.example:8443" in message
    assert "SECRET" not in message
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", [101, 304, 600, 999])
def test_statuses_that_are_no_answer_are_a_502(
    http: httpx.Client, upstream: FakeUpstream, status: int, stream: bool
) -> None:
    upstream.reply(RawReply("", status=status))

    message = assert_error(http.post("/v1/messages", json=body(stream=stream)), 502, "api_error")
    assert f"HTTP {status}" in message


def test_passthrough_redirects_are_a_502(passthrough: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(RawReply("moved", status=302, headers={"location": "/elsewhere"}))

    message = assert_error(passthrough.post("/v1/messages", json=body()), 502, "api_error")
    assert "HTTP 302" in message and "the same host" in message


# -- compressed bodies --------------------------------------------------------------------

CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw deflate": lambda data: zlib.compress(data)[2:-4],
}


def pieces(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("coding", CODINGS)
def test_compressed_answers_are_inflated(
    http: httpx.Client, upstream: FakeUpstream, coding: str
) -> None:
    header = {"content-encoding": coding.split()[-1]}
    packed = CODINGS[coding](json.dumps(completion("zipped " * 5000)).encode())
    stream = CODINGS[coding]("".join(text_stream(["zip"] * 3000)).encode())
    upstream.reply(
        RawReply(packed, content_type="application/json", headers=header),
        SSEReply(pieces(stream, 97), headers=header),
    )

    answer = http.post("/v1/messages", json=body())
    assert answer.status_code == 200 and answer.json()["content"][0]["text"] == "zipped " * 5000
    events = parse_events(http.post("/v1/messages", json=body(stream=True)).content)
    assert events[-1][0] == "message_stop" and texts(events) == "zip" * 3000


def test_a_gzip_bomb_stream_ends_with_an_error_event(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    # Comments inflate without making events, so the test is quick; the relay reads them all.
    filler = (b": " + b"x" * 1022 + b"\n") * ((inflate.GRACE + inflate.GRACE // 2) // 1024)
    body_bytes = chunk({"content": "Half"}).encode() + filler + "".join(text_stream(["!"])).encode()
    upstream.reply(
        SSEReply(pieces(gzip.compress(body_bytes), 16384), headers={"content-encoding": "gzip"})
    )

    message, events = stream_error(http, "api_error")
    assert "compression bomb" in message and texts(events) == "Half"


def test_a_gzip_bomb_answer_is_a_502(http: httpx.Client, upstream: FakeUpstream) -> None:
    packed = gzip.compress(json.dumps(completion("a" * (inflate.GRACE + 1024))).encode())
    upstream.reply(
        RawReply(packed, content_type="application/json", headers={"content-encoding": "gzip"})
    )

    assert "compression bomb" in assert_error(
        http.post("/v1/messages", json=body()), 502, "api_error"
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_corrupt_or_unsupported_encodings_are_a_502(
    http: httpx.Client, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.reply(
        RawReply(
            b"\x1f\x8b not gzip at all",
            content_type="application/json",
            headers={"content-encoding": "gzip"},
        ),
        RawReply(
            json.dumps(completion("Hi")),
            content_type="application/json",
            headers={"content-encoding": "br"},
        ),
    )

    if stream:
        assert "gzip body that is corrupt" in stream_error(http, "api_error")[0]
    else:
        message = assert_error(http.post("/v1/messages", json=body()), 502, "api_error")
        assert "gzip body that is corrupt" in message
    message = assert_error(http.post("/v1/messages", json=body(stream=stream)), 502, "api_error")
    assert "content-encoding 'br'" in message


def test_limits_count_inflated_bytes(
    http: httpx.Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_module, "MAX_RESPONSE_BODY", 1024 * 1024)
    monkeypatch.setattr(pipeline_module, "MAX_EVENT_BYTES", 1024 * 1024)
    zipped = {"content-encoding": "gzip"}
    text = random.Random(13).randbytes(1024 * 1024).hex()  # 2 MiB that compress like text
    packed = gzip.compress(json.dumps(completion(text)).encode())
    endless = gzip.compress(b'data: {"choices": [{"delta": {"content": "' + text.encode())
    upstream.reply(
        RawReply(packed, content_type="application/json", headers=zipped),
        SSEReply(pieces(endless), headers=zipped),
    )

    assert "more than 1048576 bytes" in assert_error(
        http.post("/v1/messages", json=body()), 502, "api_error"
    )
    assert "an event of more than 1048576 bytes" in stream_error(http, "api_error")[0]


# -- the relay's read-ahead ---------------------------------------------------------------

PIECE = b": " + b"x" * (64 * 1024 - 3) + b"\n"  # an SSE comment line: no events, little work


def relay_over(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """`Pipeline._relay` (what `serve` streams) over `chunks` as the upstream's body."""
    settings = bridge_settings("http://127.0.0.1:9/v1")
    pipeline = pipeline_module.Pipeline(
        settings, upstream_module.Upstreams(settings), Bus(), encoder=lambda: count_text
    )
    translator = StreamTranslator(ReplyContext(model="m", message_id="msg_relay"))
    exchange = Exchange(id="req_relay", route="messages")
    upstream = pipeline.upstreams.default
    relay = pipeline._relay(AsyncExitStack(), upstream, chunks, translator, exchange)
    return cast(AsyncGenerator[bytes, None], relay)


def test_the_read_ahead_is_bounded_in_bytes() -> None:
    """A client that does not read holds back the upstream after a few hundred KiB, however
    big the pieces the upstream sends."""
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += len(PIECE)
            yield PIECE

    async def main() -> None:
        relay = relay_over(endless())
        await anext(relay)  # message_start: the reader runs from here on
        for _ in range(200):  # let it read all it will (no timer: loop turns)
            await asyncio.sleep(0)
        await relay.aclose()

    asyncio.run(main())
    assert pulled <= pipeline_module.READ_AHEAD_BYTES + 2 * len(PIECE)


def test_the_read_ahead_is_bounded_in_pieces() -> None:
    """Small pieces stop the reader after `READ_AHEAD` of them; taking them lets it go on."""
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b": keep-alive\n"

    async def main() -> tuple[int, int]:
        relay = relay_over(endless())
        await anext(relay)  # message_start: the reader runs from here on
        for _ in range(200):
            await asyncio.sleep(0)
        held = pulled
        waiting = asyncio.ensure_future(anext(relay))  # takes what is in: the reader goes on
        for _ in range(200):
            await asyncio.sleep(0)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return held, pulled

    held, later = asyncio.run(main())
    assert held <= pipeline_module.READ_AHEAD + 2
    assert later > held


def test_a_flood_lets_other_requests_run() -> None:
    """Upstream bytes translated between two turns of another task stay within a batch: a
    fast upstream and a fast client never hold the event loop for long."""
    pulled = 0
    gaps: list[int] = []

    async def flood() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(64):
            pulled += len(PIECE)
            yield PIECE

    async def main() -> None:
        done = asyncio.Event()

        async def other_request() -> None:
            seen = 0
            while not done.is_set():
                gaps.append(pulled - seen)
                seen = pulled
                await asyncio.sleep(0)

        other = asyncio.create_task(other_request())
        async for _ in relay_over(flood()):
            pass
        done.set()
        await other

    asyncio.run(main())
    assert pulled == 64 * len(PIECE)
    assert max(gaps) <= pipeline_module.READ_AHEAD_BYTES + pipeline_module.BATCH_BYTES + len(PIECE)
