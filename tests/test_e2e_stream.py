"""Streaming `POST /v1/messages` end to end over real HTTP: the official SDK's accumulators and
the raw SSE bytes, against a scripted OpenAI-compatible upstream that streams chunk by chunk.

TestClient would buffer the whole body; only a real server shows pings during silence,
incremental delivery and what a client disconnect does upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import (
    MessageParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ToolParam,
    ToolUseBlock,
)
from conftest import (
    BIG_MODEL,
    CLIENT_KEY,
    UPSTREAM_KEY,
    Bridge,
    make_async_client,
    make_client,
    make_http,
)
from upstream import (
    DONE,
    FakeUpstream,
    JSONReply,
    Pause,
    RecordedRequest,
    SSEReply,
    chunk,
    completion,
    error_body,
    openai_usage,
    rate_limited,
    text_stream,
    user_text,
)

from claude_bridge.proxy.core.checker import check_stream, check_wire

MODEL = "claude-sonnet-4-6"
HI: list[MessageParam] = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME_TOOL: ToolParam = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
}
SERVER_ERROR = 'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n'

Event = tuple[str, dict[str, Any]]


def stream_body(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 200, "messages": HI, "stream": True, **changes}


def parse_events(raw: bytes) -> list[Event]:
    """(name, payload) of each event, after checking the wire format and the grammar."""
    assert check_wire(raw) == [], raw
    assert raw.endswith(b"\n\n")
    events: list[Event] = []
    for block in raw.decode().split("\n\n")[:-1]:
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: "), block
        assert lines[1].startswith("data: "), block
        events.append((lines[0].removeprefix("event: "), json.loads(lines[1][len("data: ") :])))
    assert check_stream([payload for _, payload in events]) == []
    return events


@contextmanager
def open_stream(bridge: Bridge, body: dict[str, Any]) -> Iterator[httpx.Response]:
    with make_http(bridge) as http, http.stream("POST", "/v1/messages", json=body) as response:
        yield response


def raw_stream(bridge: Bridge, body: dict[str, Any] | None = None) -> tuple[httpx.Response, bytes]:
    with open_stream(bridge, body or stream_body()) as response:
        return response, response.read()


def stream_ok(bridge: Bridge, body: dict[str, Any] | None = None) -> list[Event]:
    response, raw = raw_stream(bridge, body)
    assert response.status_code == 200, raw
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    events = parse_events(raw)
    assert events[-1][0] == "message_stop"
    return events


def names(events: list[Event]) -> list[str]:
    return [name for name, _ in events if name != "ping"]


def tool_chunks(calls: list[tuple[str, str, list[str]]], first_index: int = 0) -> Iterator[str]:
    """OpenAI-style tool call fragments: id and name first, then the arguments in pieces."""
    for position, (call_id, name, fragments) in enumerate(calls, start=first_index):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": position,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        for fragment in fragments:
            yield chunk({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})


def ending(finish_reason: str, **usage: int) -> list[str]:
    return [
        chunk(finish_reason=finish_reason),
        chunk(usage=openai_usage(**usage), choices=False),
        DONE,
    ]


# -- text ---------------------------------------------------------------------------------


def test_text_stream_final_message(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    upstream.always(SSEReply(text_stream(["Hel", "lo", " world"], usage=openai_usage(20, 3))))

    with client.messages.stream(model=MODEL, max_tokens=200, messages=HI) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()

    assert "".join(pieces) == "Hello world"
    assert message.id.startswith("msg_") and message.model == MODEL
    (block,) = message.content
    assert isinstance(block, TextBlock) and block.text == "Hello world"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 20 and message.usage.output_tokens == 3

    sent = upstream.last.json
    assert sent["model"] == BIG_MODEL
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert upstream.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not any(CLIENT_KEY in v for v in upstream.last.headers.values())

    events = stream_ok(bridge)
    assert names(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["model"] == MODEL
    final_delta = next(p for n, p in events if n == "message_delta")
    assert final_delta["delta"]["stop_reason"] == "end_turn"
    assert final_delta["usage"]["output_tokens"] == 3


def test_raw_event_iteration(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(SSEReply(text_stream(["A", "B"])))

    stream = client.messages.create(model=MODEL, max_tokens=200, messages=HI, stream=True)
    with stream:
        events = list(stream)

    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(
        e.delta.text
        for e in events
        if isinstance(e, RawContentBlockDeltaEvent) and isinstance(e.delta, TextDelta)
    )
    assert text == "AB"
    delta = events[-2]
    assert isinstance(delta, RawMessageDeltaEvent) and delta.delta.stop_reason == "end_turn"


@pytest.mark.parametrize("usage_chunk", [True, False], ids=["usage-chunk", "usage-on-finish"])
def test_usage_placement(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream, usage_chunk: bool
) -> None:
    usage = openai_usage(100, 7, cached=60)
    upstream.always(SSEReply(text_stream(["cached"], usage=usage, usage_chunk=usage_chunk)))

    with client.messages.stream(model=MODEL, max_tokens=200, messages=HI) as stream:
        message = stream.get_final_message()

    assert message.usage.input_tokens == 40
    assert message.usage.cache_read_input_tokens == 60
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 7

    delta = next(p for n, p in stream_ok(bridge) if n == "message_delta")
    assert delta["usage"]["output_tokens"] == 7
    assert delta["usage"]["cache_read_input_tokens"] == 60


def test_finish_without_done_is_a_normal_end(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    upstream.always(SSEReply(text_stream(["complete"])[:-1]))  # no [DONE], body ends cleanly

    with client.messages.stream(model=MODEL, max_tokens=200, messages=HI) as stream:
        message = stream.get_final_message()

    assert message.stop_reason == "end_turn"
    assert isinstance(message.content[0], TextBlock) and message.content[0].text == "complete"
    assert names(stream_ok(bridge))[-2:] == ["message_delta", "message_stop"]


# -- tools --------------------------------------------------------------------------------


def test_single_tool_call_in_fragments(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    chunks = [
        chunk({"role": "assistant", "content": None}),
        *tool_chunks([("call_abc", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])]),
        *ending("tool_calls"),
    ]
    upstream.always(SSEReply(chunks))

    with client.messages.stream(
        model=MODEL,
        max_tokens=200,
        messages=HI,
        tools=[WEATHER_TOOL],
    ) as stream:
        message = stream.get_final_message()

    (block,) = message.content
    assert isinstance(block, ToolUseBlock)
    assert (block.id, block.name, block.input) == ("call_abc", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"

    events = stream_ok(bridge, stream_body(tools=[WEATHER_TOOL]))
    start = next(p for n, p in events if n == "content_block_start")
    assert start["content_block"] == {
        "type": "tool_use",
        "id": "call_abc",
        "name": "get_weather",
        "input": {},
    }


@pytest.mark.parametrize("first_index", [0, 1], ids=["index-0", "index-from-1"])
def test_parallel_tool_calls_under_finish_stop(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream, first_index: int
) -> None:
    chunks = [
        chunk({"role": "assistant", "content": None}),
        *tool_chunks(
            [
                ("call_a", "get_weather", ['{"city"', ': "Paris"', "}"]),
                ("call_b", "get_time", ['{"tz":', ' "CET"}']),
            ],
            first_index=first_index,
        ),
        *ending("stop"),  # tool calls win over "stop"
    ]
    upstream.always(SSEReply(chunks))

    with client.messages.stream(
        model=MODEL,
        max_tokens=200,
        messages=HI,
        tools=[WEATHER_TOOL, TIME_TOOL],
    ) as stream:
        message = stream.get_final_message()

    assert message.stop_reason == "tool_use"
    weather, clock = message.content
    assert isinstance(weather, ToolUseBlock) and isinstance(clock, ToolUseBlock)
    assert (weather.id, weather.name, weather.input) == ("call_a", "get_weather", {"city": "Paris"})
    assert (clock.id, clock.name, clock.input) == ("call_b", "get_time", {"tz": "CET"})

    events = stream_ok(bridge, stream_body(tools=[WEATHER_TOOL, TIME_TOOL]))
    starts = [p["index"] for n, p in events if n == "content_block_start"]
    assert starts == [0, 1]


def test_text_then_tool_call(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "look."}),
        *tool_chunks([("call_x", "get_weather", ['{"city": ', '"Oslo"}'])]),
        *ending("tool_calls"),
    ]
    upstream.always(SSEReply(chunks))

    with client.messages.stream(
        model=MODEL,
        max_tokens=200,
        messages=HI,
        tools=[WEATHER_TOOL],
    ) as stream:
        message = stream.get_final_message()

    text, call = message.content
    assert isinstance(text, TextBlock) and text.text == "Let me look."
    assert isinstance(call, ToolUseBlock) and call.input == {"city": "Oslo"}
    assert message.stop_reason == "tool_use"

    events = stream_ok(bridge, stream_body(tools=[WEATHER_TOOL]))
    blocks = [p["content_block"]["type"] for n, p in events if n == "content_block_start"]
    assert blocks == ["text", "tool_use"]


# -- thinking -----------------------------------------------------------------------------


def test_thinking_stream(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    chunks = [
        chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        chunk({"content": None, "reasoning_content": "Let me think"}),
        chunk({"content": None, "reasoning_content": " hard."}),
        chunk({"content": "Answer: 4"}),
        *ending("stop"),
    ]
    upstream.always(SSEReply(chunks))

    with client.messages.stream(
        model=MODEL,
        max_tokens=4000,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 2048},
    ) as stream:
        message = stream.get_final_message()

    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == "Let me think hard."
    assert thinking.signature
    assert isinstance(text, TextBlock) and text.text == "Answer: 4"
    assert message.stop_reason == "end_turn"

    events = stream_ok(bridge)
    kinds = [p["delta"]["type"] for n, p in events if n == "content_block_delta"]
    assert kinds.index("signature_delta") < kinds.index("text_delta")


# -- failures -----------------------------------------------------------------------------


def assert_stream_fails(client: anthropic.Anthropic, message_part: str | None = None) -> None:
    """The SDK raises at the `error` event with type api_error: no clean end."""
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model=MODEL, max_tokens=200, messages=HI) as stream,
    ):
        stream.get_final_message()
    assert caught.value.status_code == 200  # the error came after the 200 was committed
    assert caught.value.type == "api_error"
    if message_part is not None:
        assert caught.value.api_message is not None
        assert message_part in caught.value.api_message


def assert_wire_ends_in_error(bridge: Bridge) -> list[Event]:
    response, raw = raw_stream(bridge)
    assert response.status_code == 200
    events = parse_events(raw)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "message_delta" not in names(events) and "message_stop" not in names(events)
    return events


def test_mid_stream_upstream_error(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    upstream.always(
        SSEReply([chunk({"role": "assistant", "content": "Partial"}), SERVER_ERROR], end="done")
    )

    assert_stream_fails(client, "The server had an error")
    events = assert_wire_ends_in_error(bridge)
    texts = [p["delta"].get("text") for n, p in events if n == "content_block_delta"]
    assert texts == ["Partial"]


@pytest.mark.parametrize(
    "end", ["close", "done"], ids=["connection-dropped", "body-ends-without-finish"]
)
def test_cut_stream_is_an_error_not_end_turn(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream, end: Any
) -> None:
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Half an ans"})]
    upstream.always(SSEReply(chunks, end=end))

    assert_stream_fails(client)
    assert_wire_ends_in_error(bridge)


def test_upstream_silence_beyond_read_timeout(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    bridge = make_bridge(read_timeout=0.5, ping_interval=0.1)
    upstream.reply(SSEReply([chunk({"role": "assistant", "content": "Hal"})], end="stall"))

    response, raw = raw_stream(bridge)

    assert response.status_code == 200
    events = parse_events(raw)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert [n for n, _ in events].count("ping") >= 2  # kept alive while waiting
    assert upstream.wait_disconnect(timeout=5)


@pytest.mark.parametrize(
    ("reply", "exc_class", "status", "error_type"),
    [
        pytest.param(
            rate_limited("3", type="requests", code="rate_limit_exceeded"),
            anthropic.RateLimitError,
            429,
            "rate_limit_error",
            id="429",
        ),
        pytest.param(
            JSONReply(
                error_body(
                    "This model's maximum context length is 128000 tokens. However, your "
                    "messages resulted in 130532 tokens.",
                    code="context_length_exceeded",
                ),
                status=400,
            ),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            id="400-context",
        ),
        pytest.param(
            JSONReply(error_body("overloaded", "server_error"), status=503),
            anthropic.InternalServerError,
            529,
            "overloaded_error",
            id="503",
        ),
    ],
)
def test_error_before_streaming_is_a_real_http_status(
    client: anthropic.Anthropic,
    bridge: Bridge,
    upstream: FakeUpstream,
    reply: JSONReply,
    exc_class: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
) -> None:
    upstream.always(reply)

    with pytest.raises(exc_class) as caught:
        client.messages.create(model=MODEL, max_tokens=200, messages=HI, stream=True)
    assert caught.value.status_code == status
    assert caught.value.type == error_type
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "3"
    if status == 400:
        assert caught.value.api_message == "prompt is too long: 130532 tokens > 128000 maximum"

    response, raw = raw_stream(bridge)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = json.loads(raw)
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert response.headers["request-id"] == body["request_id"]


def test_bad_request_is_not_streamed(bridge: Bridge, upstream: FakeUpstream) -> None:
    response, raw = raw_stream(bridge, stream_body(messages=[{"role": "user", "content": [{}]}]))

    assert response.status_code == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


# -- concurrency, liveness, disconnects ---------------------------------------------------


def echo(request: RecordedRequest) -> SSEReply:
    """Answers with what was asked, in several chunks, so answers can be told apart."""
    asked = user_text(request)
    pieces = [asked[i : i + 5] for i in range(0, len(asked), 5)]
    return SSEReply(text_stream(["echo", ": ", *pieces]), delay=0.002)


def test_fifty_concurrent_streams(bridge: Bridge, upstream: FakeUpstream) -> None:
    upstream.always(echo)
    count = 50

    async def one(sdk: anthropic.AsyncAnthropic, number: int) -> tuple[int, str]:
        question = f"question {number} from caller-{number}"
        async with sdk.messages.stream(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": question}]
        ) as stream:
            message = await stream.get_final_message()
        assert message.stop_reason == "end_turn"
        return number, "".join(b.text for b in message.content if isinstance(b, TextBlock))

    async def main() -> list[tuple[int, str]]:
        async with make_async_client(bridge) as sdk:
            return await asyncio.gather(*(one(sdk, n) for n in range(count)))

    results = asyncio.run(main())

    for number, text in results:
        assert text == f"echo: question {number} from caller-{number}"
    assert len(upstream.requests) == count
    assert upstream.errors == []


def test_ping_during_upstream_silence(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    bridge = make_bridge(ping_interval=0.2)
    upstream.reply(
        SSEReply(
            [
                chunk({"role": "assistant", "content": "first"}),
                Pause(1.0),
                chunk({"content": "second"}),
                *ending("stop"),
            ]
        )
    )

    arrivals: list[tuple[int, float]] = []  # (bytes received so far, when)
    body = bytearray()
    with open_stream(bridge, stream_body()) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            body += piece
            arrivals.append((len(body), time.monotonic()))
    raw = bytes(body)
    events = parse_events(raw)

    def arrived(marker: bytes) -> float:
        offset = raw.index(marker)
        return next(t for size, t in arrivals if size > offset)

    sequence = [n for n, _ in events]
    deltas = [i for i, (n, _) in enumerate(events) if n == "content_block_delta"]
    assert [events[i][1]["delta"]["text"] for i in deltas] == ["first", "second"]
    pings = sequence[deltas[0] + 1 : deltas[1]].count("ping")
    assert pings >= 2, sequence
    # Delivered as it happened, not buffered: the first word came well before the second.
    assert arrived(b'"text":"second"') - arrived(b'"text":"first"') >= 0.8


def test_client_disconnect_cancels_upstream(
    bridge: Bridge, client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(SSEReply([chunk({"role": "assistant", "content": "first words"})], end="stall"))

    with open_stream(bridge, stream_body()) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept alive: dropping it would close the stream early
        for line in lines:
            if line.startswith("data: ") and "first words" in line:
                break
        else:
            pytest.fail("the first content event never came")
        assert not upstream.disconnected.is_set()  # the upstream is stalled, still connected
    # Leaving the blocks closed the client connection mid-stream.

    assert upstream.wait_disconnect(timeout=5), "the bridge kept the upstream stream open"
    assert upstream.last.disconnected.is_set()

    upstream.reply(JSONReply(completion("still serving")))
    message = client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == "still serving"


def test_streams_reuse_the_pooled_upstream_connection(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    """A finished stream hands its connection back: five streams, one upstream connection."""
    bridge = make_bridge()
    upstream.always(SSEReply(text_stream(["one ", "two"])))
    before = upstream.accepted

    with make_client(bridge) as sdk:
        for _ in range(5):
            with sdk.messages.stream(model=MODEL, max_tokens=10, messages=HI) as stream:
                assert stream.get_final_message().content[0].type == "text"

    assert upstream.accepted - before == 1
