"""Pass-through (`mode = "anthropic"`): an upstream that serves Anthropic's `/v1/messages`
itself gets the client's request as sent, model rewritten by routing, and its reply goes back
as sent. Over real HTTP, with the official SDK as the client and a scripted upstream that
answers in Anthropic's shapes; the captures in ../shared/fixtures/anthropic replayed when
present.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock
from conftest import (
    BIG_MODEL,
    CLIENT_KEY,
    UPSTREAM_KEY,
    Bridge,
    bridge_settings,
    make_client,
    make_http,
    start_bridge,
)
from upstream import FakeUpstream, JSONReply, Pause, SSEReply

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.core.checker import check_stream
from claude_bridge.proxy.core.sse import SSEDecoder
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.replay import diff_record

MODEL = "claude-sonnet-4-6"
HI: list[MessageParam] = [{"role": "user", "content": "Hi"}]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "anthropic"
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> Any:
    return {
        "id": "msg_upstream_1",
        "type": "message",
        "role": "assistant",
        "model": BIG_MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 4, **usage},
    }


def sse(events: list[dict[str, Any]]) -> list[str]:
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


def text_events(pieces: list[str], output_tokens: int = 6) -> list[dict[str, Any]]:
    start = message([], stop="")
    start["stop_reason"] = None
    start["usage"] = {"input_tokens": 21, "output_tokens": 1, "cache_read_input_tokens": 3}
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            for p in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


def tool_events() -> list[dict[str, Any]]:
    events = text_events(["Checking."])[:-3]
    for index, (call_id, city) in enumerate([("toolu_1", "Paris"), ("toolu_2", "Oslo")], 1):
        block = {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {}}
        arguments = json.dumps({"city": city})
        events += [
            {"type": "content_block_start", "index": index, "content_block": block},
            *(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments[i : i + 5]},
                }
                for i in range(0, len(arguments), 5)
            ),
            {"type": "content_block_stop", "index": index},
        ]
    return [
        *events,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 30},
        },
        {"type": "message_stop"},
    ]


def client_events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in SSEDecoder().decode(body) + SSEDecoder().flush()]


def post_stream(bridge: Bridge) -> httpx.Response:
    """A streaming request by plain HTTP, to see the events exactly as relayed."""
    with make_http(bridge) as http:
        request = {"model": MODEL, "max_tokens": 64, "messages": HI, "stream": True}
        return http.post("/v1/messages", json=request)


@pytest.fixture
def passthrough(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge(mode="anthropic", ping_interval=0.2)


@pytest.fixture
def sdk(passthrough: Bridge) -> Iterator[anthropic.Anthropic]:
    with make_client(passthrough) as client:
        yield client


def test_request_goes_as_sent_with_the_routed_model(
    sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(message([{"type": "text", "text": "Hello!"}])))
    extra = {"context_management": {"edits": []}, "thinking": {"type": "adaptive"}}
    reply = sdk.messages.create(
        model=MODEL,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[*HI, {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "?"}],
        extra_body=extra,
        extra_headers={"anthropic-beta": "context-management-2025-06-27"},
    )
    assert isinstance(reply.content[0], TextBlock) and reply.content[0].text == "Hello!"
    assert reply.id == "msg_upstream_1" and reply.usage.input_tokens == 11

    sent = upstream.last
    assert sent.path == "/v1/messages"
    assert sent.json["model"] == BIG_MODEL
    assert sent.json["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent.json["messages"][1] == {"role": "assistant", "content": "Hi!"}  # not rewritten
    assert sent.json["context_management"] == extra["context_management"]
    assert sent.json["thinking"] == {"type": "adaptive"}
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.headers["anthropic-version"] == sdk.default_headers["anthropic-version"]
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27"
    assert CLIENT_KEY not in json.dumps(sent.headers)


def test_base_urls_with_and_without_v1(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    for base, path in [("/anthropic", "/anthropic/v1/messages"), ("/api/v1", "/api/v1/messages")]:
        bridge = make_bridge(
            mode="anthropic", openai_base_url=f"http://127.0.0.1:{upstream.port}{base}"
        )
        upstream.reply(JSONReply(message([{"type": "text", "text": "ok"}])))
        with make_client(bridge) as client:
            client.messages.create(model=MODEL, max_tokens=8, messages=HI)
        assert upstream.last.path == path


def test_streamed_text_reaches_the_sdk_as_sent(
    passthrough: Bridge, sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    events = text_events(["Hel", "lo", " there"])
    upstream.reply(SSEReply(sse(events), delay=0.01))
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
        final = stream.get_final_message()
    assert [b.text for b in final.content if isinstance(b, TextBlock)] == ["Hello there"]
    assert final.usage.output_tokens == 6 and final.usage.cache_read_input_tokens == 3
    assert upstream.last.json["stream"] is True

    upstream.reply(SSEReply(sse(events)))
    body = post_stream(passthrough)
    assert body.headers["content-type"].startswith("text/event-stream")
    assert client_events(body.content) == events


def test_parallel_streamed_tool_calls(sdk: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(SSEReply(sse(tool_events())))
    with sdk.messages.stream(model=MODEL, max_tokens=256, messages=HI, tools=[WEATHER]) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if isinstance(b, ToolUseBlock)]
    assert [(c.id, c.input) for c in calls] == [
        ("toolu_1", {"city": "Paris"}),
        ("toolu_2", {"city": "Oslo"}),
    ]
    assert final.stop_reason == "tool_use"


def test_cut_stream_ends_with_an_error_event(passthrough: Bridge, upstream: FakeUpstream) -> None:
    upstream.reply(SSEReply(sse(text_events(["partial"])[:4]), end="close"))
    body = post_stream(passthrough)
    events = client_events(body.content)
    assert events[-1]["type"] == "error"
    assert not any(e["type"] in ("message_delta", "message_stop") for e in events)

    upstream.reply(SSEReply(sse(text_events(["partial"])[:4]), end="close"))
    with (
        make_client(passthrough) as client,
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream,
    ):
        stream.get_final_message()


def test_upstream_error_event_is_relayed(passthrough: Bridge, upstream: FakeUpstream) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.reply(SSEReply(sse([*text_events(["a"])[:3], overloaded])))
    with (
        make_client(passthrough) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream,
    ):
        stream.get_final_message()
    assert "Overloaded" in str(caught.value)


def test_pings_while_the_upstream_is_silent(passthrough: Bridge, upstream: FakeUpstream) -> None:
    events = text_events(["slow"])
    chunks: list[str | Pause] = [*sse(events[:2]), Pause(0.7), *sse(events[2:])]
    upstream.reply(SSEReply(chunks))
    body = post_stream(passthrough)
    relayed = client_events(body.content)
    assert [e for e in relayed if e["type"] != "ping"] == [e for e in events if e["type"] != "ping"]
    assert sum(e["type"] == "ping" for e in relayed) > sum(e["type"] == "ping" for e in events)
    check_stream(relayed)


@pytest.mark.parametrize(
    ("status", "error_type", "sdk_error"),
    [
        (529, "overloaded_error", anthropic.InternalServerError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (400, "invalid_request_error", anthropic.BadRequestError),
    ],
)
def test_upstream_errors_map_to_anthropic_errors(
    sdk: anthropic.Anthropic,
    upstream: FakeUpstream,
    status: int,
    error_type: str,
    sdk_error: type[anthropic.APIStatusError],
) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": f"upstream says {status}"}}
    upstream.reply(JSONReply(body, status=status))
    with pytest.raises(sdk_error) as caught:
        sdk.messages.create(model=MODEL, max_tokens=8, messages=HI)
    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type  # type: ignore[index]
    assert f"upstream says {status}" in caught.value.message


def test_non_message_answer_is_an_api_error(
    sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply({"choices": []}))
    with pytest.raises(anthropic.InternalServerError, match="not an Anthropic message"):
        sdk.messages.create(model=MODEL, max_tokens=8, messages=HI)


def test_bad_input_never_reaches_the_upstream(passthrough: Bridge, upstream: FakeUpstream) -> None:
    with make_http(passthrough) as http:
        answer = http.post("/v1/messages", json={"model": MODEL, "messages": HI})
    assert answer.status_code == 400
    assert "max_tokens" in answer.json()["error"]["message"]
    assert upstream.requests == []


def test_count_tokens_stays_local(sdk: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    counted = sdk.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hello world"}]
    )
    assert counted.input_tokens > 0
    assert upstream.requests == []


def test_recorded_and_replayed(upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = bridge_settings(upstream.base_url, mode="anthropic", record_dir=str(tmp_path))
    recorder = Recorder.from_settings(settings)
    bridge = start_bridge(settings, create_app(settings, recorder=recorder))
    upstream.reply(
        SSEReply(sse(tool_events())), JSONReply(message([{"type": "text", "text": "x"}]))
    )
    try:
        with make_client(bridge) as client:
            with client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
                stream.get_final_message()
            client.messages.create(model=MODEL, max_tokens=8, messages=HI)
    finally:
        bridge.stop()
    records = load(recorder.path).records
    assert [(r.routing.upstream, r.routing.mode) for r in records] == [("default", "anthropic")] * 2
    for record in records:
        result = diff_record(record)
        assert (result.request.outcome, result.reply.outcome) == ("same", "same"), result
    assert UPSTREAM_KEY not in recorder.path.read_text()


FIXTURE_STREAMS = sorted(FIXTURES.glob("*.sse")) if FIXTURES.is_dir() else []


@pytest.mark.skipif(not FIXTURE_STREAMS, reason="../shared/fixtures is not present")
@pytest.mark.parametrize("path", FIXTURE_STREAMS, ids=lambda p: p.stem)
def test_shared_anthropic_captures_pass_through(
    passthrough: Bridge, upstream: FakeUpstream, path: Path
) -> None:
    raw = path.read_bytes()
    upstream.reply(SSEReply([raw[i : i + 97] for i in range(0, len(raw), 97)]))
    body = post_stream(passthrough)
    relayed = [e for e in client_events(body.content) if e["type"] != "ping"]
    sent = [e for e in client_events(raw) if e["type"] != "ping"]
    if sent[-1]["type"] in ("message_stop", "error"):
        assert relayed == sent
    else:  # a capture cut before its end (the docs excerpts) gets the proxy's error event
        assert relayed[:-1] == sent
        assert relayed[-1]["type"] == "error"


def test_health_names_the_upstream(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    locked = make_bridge(mode="anthropic", auth_token=CLIENT_KEY)
    health = httpx.get(locked.url + "/", headers={"x-api-key": CLIENT_KEY}).json()
    assert health["upstream"] == f"127.0.0.1:{upstream.port}"
