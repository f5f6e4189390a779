"""The Responses dialect end to end: the `anthropic` SDK over loopback, claude-bridge with
`mode = "responses"`, and a scripted upstream answering in OpenAI's Responses shapes
(`responses_upstream.py`, learnt from ../shared/fixtures/openai_responses).

Text (JSON and streamed), parallel tool calls and their results, thinking carried across two
turns in the signature, a refusal, `incomplete`, upstream errors before and during a stream, a
cut stream, strict structured outputs; then recording, `replay diff` and `--upstream-replay`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import (
    Message,
    MessageParam,
    TextBlock,
    ThinkingBlock,
    ThinkingConfigParam,
    ToolUseBlock,
)
from conftest import (
    BIG_MODEL,
    WEATHER_TOOL,
    Bridge,
    bridge_settings,
    make_client,
    make_http,
    serving,
    start_bridge,
)
from responses_upstream import (
    call_item,
    error_event,
    failed,
    message_item,
    opening,
    reasoning_item,
    response,
    stream,
    usage,
)
from upstream import FakeUpstream, JSONReply, RawReply, SSEReply, error_body, rate_limited

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.core.checker import check_stream
from claude_bridge.proxy.core.sse import SSEDecoder
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.replay import ReplayTransport, diff_record

MODEL = "claude-sonnet-4-6"
HI: list[MessageParam] = [{"role": "user", "content": "Hi"}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "nickname": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}
BLOB = "gAAAAABencrypted-reasoning-blob=="
THINKING: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 2048}


@pytest.fixture(scope="module")
def responses_bridge(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    yield from serving(upstream_server.base_url, mode="responses")


@pytest.fixture
def sdk(responses_bridge: Bridge, upstream: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with make_client(responses_bridge) as client:
        yield client


def wire(bridge: Bridge, **params: Any) -> list[dict[str, Any]]:
    """A streamed request by plain HTTP: the events exactly as the client gets them."""
    body = {"model": MODEL, "max_tokens": 256, "messages": HI, "stream": True, **params}
    with make_http(bridge) as http:
        response = http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    decoder = SSEDecoder()
    return [json.loads(e.data) for e in decoder.decode(response.content) + decoder.flush()]


# -- replies -------------------------------------------------------------------------------


def test_text_json(sdk: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(response([message_item("Hello!")], used=usage(30, 4, cached=10))))
    reply = sdk.messages.create(
        model=MODEL, max_tokens=64, system="Be brief.", messages=HI, stop_sequences=["END"]
    )
    assert isinstance(reply.content[0], TextBlock) and reply.content[0].text == "Hello!"
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.input_tokens == 20 and reply.usage.cache_read_input_tokens == 10
    assert reply.usage.output_tokens == 4 and reply.model == MODEL

    sent = upstream.last
    assert sent.path == "/v1/responses"
    assert sent.json["model"] == BIG_MODEL and sent.json["instructions"] == "Be brief."
    assert sent.json["store"] is False and sent.json["max_output_tokens"] == 64
    assert sent.json["input"][0]["role"] == "user"
    assert "stop" not in json.dumps(sent.json)  # no counterpart: not sent (README)


def test_text_stream(
    responses_bridge: Bridge, sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(SSEReply(stream([message_item("Hello there, friend")]), delay=0.005))
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HI) as events:
        final = events.get_final_message()
    assert [b.text for b in final.content if isinstance(b, TextBlock)] == ["Hello there, friend"]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 6
    assert upstream.last.json["stream"] is True

    upstream.reply(SSEReply(stream([message_item("Hello")])))
    check_stream(wire(responses_bridge))


def test_parallel_tool_calls_and_their_results(
    responses_bridge: Bridge, sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    calls = [
        message_item("Checking both."),
        call_item("call_p1", "get_weather", {"city": "Paris"}),
        call_item("call_p2", "get_weather", {"city": "Oslo"}),
    ]
    upstream.reply(SSEReply(stream(calls)))
    with sdk.messages.stream(
        model=MODEL, max_tokens=256, messages=HI, tools=[WEATHER_TOOL]
    ) as events:
        final = events.get_final_message()
    uses = [b for b in final.content if isinstance(b, ToolUseBlock)]
    assert [(u.name, u.input) for u in uses] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert final.stop_reason == "tool_use"
    assert upstream.last.json["tools"][0]["name"] == "get_weather"
    assert upstream.last.json.get("parallel_tool_calls") is not False

    upstream.reply(JSONReply(response(calls)))
    again = sdk.messages.create(model=MODEL, max_tokens=256, messages=HI, tools=[WEATHER_TOOL])
    assert [b.id for b in again.content if isinstance(b, ToolUseBlock)] == [u.id for u in uses]

    upstream.reply(JSONReply(response([message_item("Sunny in Paris, snow in Oslo.")])))
    results: MessageParam = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": uses[1].id, "content": "snow"},
        ],
    }
    done = sdk.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[*HI, {"role": "assistant", "content": final.content}, results],
    )
    assert isinstance(done.content[0], TextBlock) and done.stop_reason == "end_turn"
    items = upstream.last.json["input"]
    sent_calls = [i for i in items if i.get("type") == "function_call"]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [c["call_id"] for c in sent_calls] == ["call_p1", "call_p2"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [
        ("call_p1", "sunny"),
        ("call_p2", "snow"),
    ]
    assert upstream.last.json["parallel_tool_calls"] is False


def test_thinking_is_carried_across_two_turns(
    sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    turn = [
        reasoning_item("rs_think1", ["Looking up the weather", "in Paris"], BLOB),
        call_item("call_t1", "get_weather", {"city": "Paris"}),
    ]
    upstream.reply(SSEReply(stream(turn, used=usage(50, 30, reasoning=20))))
    with sdk.messages.stream(
        model=MODEL, max_tokens=4096, messages=HI, tools=[WEATHER_TOOL], thinking=THINKING
    ) as events:
        first = events.get_final_message()
    sent = upstream.last.json
    assert sent["reasoning"]["summary"] and sent["reasoning"]["effort"]
    assert sent["include"] == ["reasoning.encrypted_content"]
    block = first.content[0]
    assert isinstance(block, ThinkingBlock)
    assert block.thinking == "Looking up the weather\n\nin Paris"
    assert BLOB in block.signature and "rs_think1" not in block.signature  # id encoded
    use = first.content[1]
    assert isinstance(use, ToolUseBlock)

    upstream.reply(JSONReply(response([message_item("It is sunny.")])))
    sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        tools=[WEATHER_TOOL],
        thinking=THINKING,
        messages=[
            *HI,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    items = upstream.last.json["input"]
    kinds = [i.get("type", "message") for i in items]
    assert kinds == ["message", "reasoning", "function_call", "function_call_output"]
    reasoning = items[1]
    assert reasoning["id"] == "rs_think1" and reasoning["encrypted_content"] == BLOB
    # The summary goes back as the thinking text the client kept: display only, for the
    # upstream the id and the encrypted content are what count.
    assert [s["text"] for s in reasoning["summary"]] == ["Looking up the weather\n\nin Paris"]


def test_refusal(sdk: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(response([message_item("I can't help with that.", refusal=True)])))
    reply = sdk.messages.create(model=MODEL, max_tokens=64, messages=HI)
    assert reply.stop_reason == "refusal"
    assert isinstance(reply.content[0], TextBlock)
    assert reply.content[0].text == "I can't help with that."

    upstream.reply(SSEReply(stream([message_item("No.", refusal=True)])))
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HI) as events:
        assert events.get_final_message().stop_reason == "refusal"


def test_incomplete_is_max_tokens(
    responses_bridge: Bridge, sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    cut = {"status": "incomplete", "incomplete": "max_output_tokens"}
    upstream.reply(JSONReply(response([message_item("Once upon a")], **cut)))
    reply = sdk.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert reply.stop_reason == "max_tokens"
    assert isinstance(reply.content[0], TextBlock) and reply.content[0].text == "Once upon a"

    upstream.reply(SSEReply(stream([message_item("Once")], terminal="response.incomplete", **cut)))
    events = wire(responses_bridge)
    check_stream(events)
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "exc_class", "status"),
    [
        (
            rate_limited("3", type="requests", code="rate_limit_exceeded"),
            anthropic.RateLimitError,
            429,
        ),
        (
            JSONReply(
                error_body("The model `gpt-nope` does not exist", code="model_not_found"),
                status=404,
            ),
            anthropic.NotFoundError,
            404,
        ),
        (
            JSONReply(
                error_body(
                    "Invalid 'max_output_tokens': integer below minimum value.",
                    code="integer_below_min_value",
                ),
                status=400,
            ),
            anthropic.BadRequestError,
            400,
        ),
    ],
    ids=["429", "404", "400"],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
def test_upstream_http_errors(
    sdk: anthropic.Anthropic,
    upstream: FakeUpstream,
    reply: JSONReply,
    exc_class: type[anthropic.APIStatusError],
    status: int,
    streamed: bool,
) -> None:
    upstream.reply(reply)
    with pytest.raises(exc_class) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HI, stream=streamed)
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("failure", "error_type", "words"),
    [
        (
            failed("rate_limit_exceeded", "Please try again in 11.054s."),
            "rate_limit_error",
            "11.054s",
        ),
        (failed("server_error", "The model failed to generate a response."), "api_error", "failed"),
        (error_event("ERR_SOMETHING", "Something went wrong"), "api_error", "went wrong"),
    ],
    ids=["failed-rate-limit", "failed-server-error", "error-event"],
)
def test_failed_and_error_events_become_anthropic_errors(
    responses_bridge: Bridge,
    sdk: anthropic.Anthropic,
    upstream: FakeUpstream,
    failure: str,
    error_type: str,
    words: str,
) -> None:
    partial = [*opening(), *stream([message_item("Partial")])[2:-2]]
    upstream.always(SSEReply([*partial, failure]))
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model=MODEL, max_tokens=64, messages=HI) as events,
    ):
        events.get_final_message()
    assert caught.value.type == error_type
    assert words in str(caught.value.api_message)

    relayed = wire(responses_bridge)
    assert relayed[-1]["type"] == "error" and relayed[-1]["error"]["type"] == error_type
    assert not {"message_delta", "message_stop"} & {e["type"] for e in relayed}


def test_a_failed_json_answer_is_an_error(sdk: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    error = {"code": "rate_limit_exceeded", "message": "Slow down."}
    upstream.reply(JSONReply(response([], status="failed", error=error)))
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HI)


def test_a_cut_stream_ends_in_an_error_event(
    responses_bridge: Bridge, sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.always(SSEReply(stream([message_item("Half an answer")])[:-1], end="close"))
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model=MODEL, max_tokens=64, messages=HI) as events,
    ):
        events.get_final_message()
    assert caught.value.status_code == 200 and caught.value.type == "api_error"
    relayed = wire(responses_bridge)
    assert relayed[-1]["type"] == "error"
    assert "message_stop" not in [e["type"] for e in relayed]


# -- strict structured outputs ------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
def test_structured_output_optional_property_without_the_added_null(
    sdk: anthropic.Anthropic, upstream: FakeUpstream, streamed: bool
) -> None:
    answer = [message_item(json.dumps({"name": "Ann", "nickname": None}))]
    upstream.reply(SSEReply(stream(answer)) if streamed else JSONReply(response(answer)))
    output_config = {"format": {"type": "json_schema", "schema": PERSON}}
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": HI}
    if streamed:
        with sdk.messages.stream(**params, extra_body={"output_config": output_config}) as ev:
            reply = ev.get_final_message()
    else:
        reply = sdk.messages.create(**params, extra_body={"output_config": output_config})
    text = reply.content[0]
    assert isinstance(text, TextBlock) and json.loads(text.text) == {"name": "Ann"}

    sent = upstream.last.json["text"]["format"]
    assert sent["type"] == "json_schema" and sent["strict"] is True
    assert sorted(sent["schema"]["required"]) == ["name", "nickname"]
    assert "null" in json.dumps(sent["schema"]["properties"]["nickname"])


# -- recording and replay ------------------------------------------------------------------


def two_exchanges(bridge: Bridge) -> tuple[Message, Message]:
    """A JSON exchange and a streamed one with thinking and a tool call, through the SDK."""
    try:
        with make_client(bridge) as client:
            first = client.messages.create(model=MODEL, max_tokens=64, messages=HI)
            with client.messages.stream(
                model=MODEL, max_tokens=4096, messages=HI, tools=[WEATHER_TOOL], thinking=THINKING
            ) as events:
                return first, events.get_final_message()
    finally:
        bridge.stop()


def test_recorded_exchanges_diff_same_and_replay_through_the_sdk(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = bridge_settings(
        upstream.base_url, mode="responses", record_dir=str(tmp_path / "journal")
    )
    recorder = Recorder.from_settings(settings)
    upstream.reply(JSONReply(response([message_item("Recorded hello")])))
    call = call_item("call_r1", "get_weather", {"city": "Paris"})
    upstream.reply(SSEReply(stream([reasoning_item("rs_r1", ["Hmm"], BLOB), call])))
    first, second = two_exchanges(start_bridge(settings, create_app(settings, recorder=recorder)))

    records = load(recorder.path).records[::-1]
    assert [r.routing.mode for r in records] == ["responses", "responses"]
    for record in records:
        result = diff_record(record)
        assert result.request.outcome == "same", result.request.unified(record.id)
        assert result.reply.outcome == "same", result.reply.note

    # Served back from the recording: no upstream, the same answers through the SDK.
    replayed = bridge_settings(upstream.base_url, mode="responses", openai_api_key=None)
    transport = ReplayTransport(records)
    upstream.reset()
    again = two_exchanges(start_bridge(replayed, create_app(replayed, transport=transport)))
    assert upstream.requests == [] and transport.hits == 2 and transport.misses == 0
    assert [m.model_dump(exclude={"id"}) for m in again] == [
        m.model_dump(exclude={"id"}) for m in (first, second)
    ]
    assert isinstance(again[1].content[0], ThinkingBlock)


def test_an_answer_that_is_no_response_is_a_502(
    sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply({"object": "not-a-response"}))
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HI)
    assert caught.value.status_code == 502
    assert "upstream answer has no output" in str(caught.value.api_message)


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"type": "document", "source": {"type": "file", "file_id": "file_011CN"}}, "Files API"),
        ({"type": "image", "source": {"type": "file", "file_id": "file_011CN"}}, "Files API"),
        (
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/msword", "data": "AAAA"},
            },
            "application/msword",
        ),
    ],
    ids=["file-document", "file-image", "word-document"],
)
def test_what_the_dialect_cannot_carry_is_a_400_before_the_upstream(
    sdk: anthropic.Anthropic, upstream: FakeUpstream, block: dict[str, Any], words: str
) -> None:
    content: Any = [block, {"type": "text", "text": "Summarize this."}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": content}]
        )
    assert words in str(caught.value.api_message)
    assert upstream.requests == []


def test_an_error_body_is_read_whatever_its_content_type(
    sdk: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """DeepSeek's Responses route answers its 400s as `application/octet-stream`."""
    body = error_body("Invalid 'input[2]': unknown item type.", code="invalid_value")
    upstream.reply(RawReply(json.dumps(body), 400, "application/octet-stream"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HI)
    assert caught.value.type == "invalid_request_error"
    assert "unknown item type" in str(caught.value.api_message)
