"""Non-streaming `POST /v1/messages` end to end: the official SDK -> claude-bridge on uvicorn ->
a scripted OpenAI-compatible upstream, all over real HTTP on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import anthropic
import httpx
import pytest
from anthropic.types import (
    Message,
    MessageParam,
    TextBlock,
    ThinkingBlock,
    ToolParam,
    ToolUseBlock,
)
from conftest import (
    BIG_MODEL,
    CLIENT_KEY,
    SMALL_MODEL,
    UPSTREAM_KEY,
    WEATHER_TOOL,
    Bridge,
    make_client,
)
from upstream import (
    FakeUpstream,
    Hangup,
    JSONReply,
    RawReply,
    SSEReply,
    completion,
    error_body,
    openai_usage,
    tool_call,
)

from claude_bridge.proxy import __version__

MODEL = "claude-sonnet-4-6"
HI: list[MessageParam] = [{"role": "user", "content": "Hi"}]
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
TIME_TOOL: ToolParam = {
    "name": "get_time",
    "description": "Local time in a timezone",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
}


class HTTPResponse(Protocol):
    """What both httpx and the SDK's httpx2 responses offer."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def assert_error_shape(response: HTTPResponse, status: int, error_type: str) -> str:
    """The Anthropic error body and `request-id` header; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"].startswith("req_")
    assert response.headers["request-id"] == body["request_id"]
    return str(body["error"]["message"])


def assert_sdk_error(exc: anthropic.APIStatusError, status: int, error_type: str) -> str:
    assert exc.status_code == status
    assert exc.type == error_type
    assert exc.request_id is not None and exc.request_id.startswith("req_")
    assert_error_shape(exc.response, status, error_type)
    assert exc.api_message is not None
    return exc.api_message


def assert_upstream_auth(upstream: FakeUpstream) -> None:
    """The upstream key went upstream; nothing of the client's credentials did."""
    for request in upstream.requests:
        assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert "x-api-key" not in request.headers
        assert not any(CLIENT_KEY in value for value in request.headers.values())


# -- replies ------------------------------------------------------------------------------


def test_text_reply(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("Hello there!", usage=openai_usage(20, 3))))

    message = client.messages.create(model=MODEL, max_tokens=100, messages=HI)

    assert isinstance(message, Message)
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert len(message.content) == 1
    block = message.content[0]
    assert isinstance(block, TextBlock) and block.text == "Hello there!"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == 20
    assert message.usage.output_tokens == 3
    assert message.usage.cache_read_input_tokens == 0
    assert message._request_id is not None and message._request_id.startswith("req_")

    (sent,) = upstream.requests
    assert sent.method == "POST" and sent.path == "/v1/chat/completions"
    assert sent.headers["content-type"].startswith("application/json")
    assert_upstream_auth(upstream)
    body = sent.json
    assert body["model"] == BIG_MODEL
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["max_tokens"] == 100
    assert not body.get("stream")


def test_system_prompt_and_sampling_reach_upstream(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("ok")))

    client.messages.create(
        model=MODEL,
        max_tokens=50,
        system="Be brief.",
        stop_sequences=["END"],
        extra_body={"temperature": 0.3},  # no longer a typed argument in SDK 2.x
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
    )

    body = upstream.last.json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert body["temperature"] == 0.3
    assert body["stop"] == ["END"]


def test_parallel_tool_calls_under_finish_reason_stop(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(
        JSONReply(
            completion(
                "Checking both.",
                tool_calls=[
                    tool_call("call_w1", "get_weather", {"city": "Paris"}),
                    tool_call("call_t2", "get_time", '{"tz": "Europe/Paris"}'),
                ],
                finish_reason="stop",  # many servers say "stop" even when they call tools
            )
        )
    )

    message = client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
    )

    assert message.stop_reason == "tool_use"
    text, weather, clock = message.content
    assert isinstance(text, TextBlock) and text.text == "Checking both."
    assert isinstance(weather, ToolUseBlock) and isinstance(clock, ToolUseBlock)
    assert (weather.id, weather.name, weather.input) == (
        "call_w1",
        "get_weather",
        {"city": "Paris"},
    )
    assert (clock.id, clock.name, clock.input) == ("call_t2", "get_time", {"tz": "Europe/Paris"})

    body = upstream.last.json
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "Current weather in a city",
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "parameters": TIME_TOOL["input_schema"],
                "description": "Local time in a timezone",
            },
        },
    ]


def test_tool_choice_any_and_single_tool(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(
        JSONReply(
            completion(None, tool_calls=[tool_call("call_1", "get_weather", '{"city":"Oslo"}')])
        )
    )

    message = client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Oslo?"}],
    )

    (block,) = message.content
    assert isinstance(block, ToolUseBlock) and block.input == {"city": "Oslo"}
    assert message.stop_reason == "tool_use"
    body = upstream.last.json
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False


def test_tool_result_history(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("It is 18C and noon.")))

    message = client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01Weather",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_01Clock",
                        "name": "get_time",
                        "input": {"tz": "CET"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01Weather", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01Clock",
                        "content": [
                            {"type": "text", "text": "12:00"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG,
                                },
                            },
                        ],
                    },
                    {"type": "text", "text": "Summarise please."},
                ],
            },
        ],
    )
    assert isinstance(message.content[0], TextBlock)

    messages = upstream.last.json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assistant, weather, clock, user = messages[1:]
    assert assistant["content"] == "Let me check."
    calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant["tool_calls"]
    ]
    assert calls == [
        ("toolu_01Weather", "get_weather", {"city": "Paris"}),
        ("toolu_01Clock", "get_time", {"tz": "CET"}),
    ]
    assert all(c["type"] == "function" for c in assistant["tool_calls"])
    assert weather == {"role": "tool", "tool_call_id": "toolu_01Weather", "content": "18C"}
    assert clock["tool_call_id"] == "toolu_01Clock"
    # OpenAI tool messages are text only: the image moves to the user message that follows.
    assert isinstance(clock["content"], str) and clock["content"].startswith("12:00")
    parts = user["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert images == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    assert parts[-1] == {"type": "text", "text": "Summarise please."}
    assert parts.index(images[0]) < len(parts) - 1


def test_tool_result_error_flag_and_empty_content(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("Sorry.")))

    client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "city is required",
                        "is_error": True,
                    }
                ],
            },
        ],
    )

    messages = upstream.last.json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["content"] is None
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert "city is required" in messages[2]["content"]
    assert messages[2]["content"] != "city is required"  # the error is marked somehow


def test_image_input(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("A red pixel.")))

    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )

    assert isinstance(message.content[0], TextBlock)
    (user,) = upstream.last.json["messages"]
    assert user == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
            {"type": "text", "text": "What is this?"},
        ],
    }


def test_thinking(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("The answer is 4.", reasoning_content="2 plus 2 makes 4.")))

    message = client.messages.create(
        model=MODEL,
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "2+2?"}],
    )

    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == "2 plus 2 makes 4."
    assert isinstance(thinking.signature, str) and thinking.signature
    assert isinstance(text, TextBlock) and text.text == "The answer is 4."
    assert message.stop_reason == "end_turn"
    assert upstream.last.json["reasoning_effort"] in ("low", "medium", "high")


def test_thinking_replayed_in_history_is_accepted(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("Yes.")))

    client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {"role": "user", "content": "2+2?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "easy", "signature": "cb1.abc"},
                    {"type": "text", "text": "4"},
                ],
            },
            {"role": "user", "content": "Sure?"},
        ],
    )

    messages = upstream.last.json["messages"]
    assert messages[1] == {"role": "assistant", "content": "4"}


def test_cached_usage(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("cached", usage=openai_usage(1000, 50, cached=800))))

    message = client.messages.create(model=MODEL, max_tokens=100, messages=HI)

    assert message.usage.input_tokens == 200
    assert message.usage.cache_read_input_tokens == 800
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 50


def test_length_finish_is_max_tokens(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("Once upon a", finish_reason="length")))

    message = client.messages.create(model=MODEL, max_tokens=3, messages=HI)

    assert message.stop_reason == "max_tokens"


# -- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_model", "upstream_model"),
    [
        ("claude-opus-4-7", BIG_MODEL),
        ("claude-sonnet-4-6", BIG_MODEL),
        ("claude-haiku-4-5-20251001", SMALL_MODEL),
        ("claude-3-5-haiku-latest", SMALL_MODEL),
    ],
)
def test_routing(
    client: anthropic.Anthropic, upstream: FakeUpstream, client_model: str, upstream_model: str
) -> None:
    upstream.reply(JSONReply(completion("routed", model=upstream_model)))

    message = client.messages.create(model=client_model, max_tokens=10, messages=HI)

    assert upstream.last.json["model"] == upstream_model
    assert message.model == client_model


# -- client auth, beta, other routes ------------------------------------------------------


def test_bearer_client_auth_is_accepted(bridge: Bridge, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("hi bearer")))

    with make_client(bridge, api_key=None, auth_token="client-oauth-token") as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert isinstance(message.content[0], TextBlock) and message.content[0].text == "hi bearer"
    assert upstream.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not any("client-oauth-token" in v for v in upstream.last.headers.values())


def test_x_api_key_client_auth_is_accepted(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("hi key")))

    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 10, "messages": HI})

    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": "hi key"}]
    assert response.headers["request-id"].startswith("req_")
    assert_upstream_auth(upstream)


def test_beta_namespace(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("beta ok")))

    message = client.beta.messages.create(
        model=MODEL,
        max_tokens=10,
        messages=[{"role": "user", "content": "Hi"}],
        betas=["interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
    )

    assert message.content[0].type == "text"
    assert upstream.last.json["messages"] == [{"role": "user", "content": "Hi"}]


def test_beta_query_string_is_ignored(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("beta ok")))

    response = http.post(
        "/v1/messages?beta=true", json={"model": MODEL, "max_tokens": 10, "messages": HI}
    )

    assert response.status_code == 200, response.text
    assert len(upstream.requests) == 1


def test_health(http: httpx.Client, upstream: FakeUpstream) -> None:
    response = http.get("/")

    assert response.status_code == 200
    # No auth token set: nobody is told where the key goes (tests/test_browser_guard.py).
    body = response.json()
    assert body["status"] == "ok" and body["version"] == __version__
    assert "upstream" not in body and "upstreams" not in body
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("POST", "/v1/complete"), ("GET", "/v1/messages"), ("POST", "/")],
)
def test_unknown_route_is_anthropic_404(
    http: httpx.Client, upstream: FakeUpstream, method: str, path: str
) -> None:
    response = http.request(method, path, json={})

    assert_error_shape(response, 404, "not_found_error")
    assert upstream.requests == []


def test_count_tokens_is_offline(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    short = client.messages.count_tokens(model=MODEL, messages=HI)
    long = client.messages.count_tokens(
        model=MODEL,
        system="You are a careful assistant. " * 20,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Tell me about the weather in Paris " * 30}],
    )
    beta = client.beta.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}]
    )

    assert isinstance(short.input_tokens, int) and short.input_tokens > 0
    assert long.input_tokens > short.input_tokens + 200
    assert beta.input_tokens == short.input_tokens
    assert upstream.requests == []


def test_count_tokens_bad_input(http: httpx.Client, upstream: FakeUpstream) -> None:
    response = http.post("/v1/messages/count_tokens", json={"model": MODEL})

    message = assert_error_shape(response, 400, "invalid_request_error")
    assert message.startswith("messages: Field required")
    assert upstream.requests == []


def test_claude_code_shaped_request(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("Here are the files.")))
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32000,
        "system": [
            {
                "type": "text",
                "text": "x-anthropic-billing-header: cc_version=2.1.117.48f; cc_entrypoint=cli; "
                "cch=71fea;",
            },
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "<env>cwd: /repo</env>"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>be nice</system-reminder>"},
                    {
                        "type": "text",
                        "text": "list the files",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            },
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a shell command",
                "input_schema": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                    "additionalProperties": False,
                },
            },
            {
                "name": "mcp__github__create_issue",
                "description": "Create an issue",
                "input_schema": {"type": "object", "properties": {"title": {"type": "string"}}},
                "defer_loading": True,
            },
        ],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_1234"},
        "stream": False,
    }

    response = http.post(
        "/v1/messages?beta=true",
        json=body,
        headers={
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
            "context-management-2025-06-27"
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": "Here are the files."}]
    sent = upstream.last.json
    system = sent["messages"][0]
    assert system["role"] == "system"
    assert "x-anthropic-billing-header" not in json.dumps(sent)
    assert "You are Claude Code" in system["content"]
    assert "<env>cwd: /repo</env>" in system["content"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    user_text = json.dumps(sent["messages"][1]["content"])
    assert "be nice" in user_text and "list the files" in user_text
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash", "mcp__github__create_issue"]
    assert "defer_loading" not in json.dumps(sent["tools"])
    assert "context_management" not in sent
    assert "thinking" not in sent
    assert sent["reasoning_effort"] == "high"
    assert len(sent.get("user", "")) <= 64


# -- upstream errors ----------------------------------------------------------------------

CONTEXT_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "130532 tokens. Please reduce the length of the messages."
)


@pytest.mark.parametrize(
    ("reply", "exc_class", "status", "error_type"),
    [
        pytest.param(
            JSONReply(error_body("Invalid 'messages[1].tool_call_id'"), status=400),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            id="400",
        ),
        pytest.param(
            JSONReply(error_body("Input validation error", "BadRequestError"), status=422),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            id="422",
        ),
        pytest.param(
            JSONReply(error_body("Incorrect API key provided", code="invalid_api_key"), 401),
            anthropic.InternalServerError,  # the proxy's key, not the client's: see below
            502,
            "api_error",
            id="401",
        ),
        pytest.param(
            JSONReply(error_body("Insufficient credits", "payment_required"), status=402),
            anthropic.APIStatusError,
            402,
            "billing_error",
            id="402",
        ),
        pytest.param(
            JSONReply(error_body("Country not supported", "permission_denied"), status=403),
            anthropic.InternalServerError,
            502,
            "api_error",
            id="403",
        ),
        pytest.param(
            JSONReply(
                error_body("The model `big-model` does not exist", code="model_not_found"), 404
            ),
            anthropic.NotFoundError,
            404,
            "not_found_error",
            id="404",
        ),
        pytest.param(
            JSONReply(error_body("The server had an error", "server_error"), status=500),
            anthropic.InternalServerError,
            500,
            "api_error",
            id="500",
        ),
        pytest.param(
            JSONReply(error_body("Bad gateway", "server_error"), status=502),
            anthropic.InternalServerError,
            500,
            "api_error",
            id="502-json",
        ),
        pytest.param(
            JSONReply(error_body("Service unavailable", "server_error"), status=503),
            anthropic.InternalServerError,
            529,
            "overloaded_error",
            id="503",
        ),
        pytest.param(
            JSONReply(error_body("Gateway timeout", "server_error"), status=504),
            anthropic.InternalServerError,
            504,
            "timeout_error",
            id="504",
        ),
        pytest.param(
            JSONReply(error_body("Request timed out", "timeout"), status=408),
            anthropic.InternalServerError,
            504,
            "timeout_error",
            id="408",
        ),
        pytest.param(
            JSONReply(error_body("Request too large"), status=413),
            anthropic.APIStatusError,
            413,
            "request_too_large",
            id="413",
        ),
        pytest.param(
            RawReply("not json at all {", content_type="application/json"),
            anthropic.InternalServerError,
            502,
            "api_error",
            id="200-invalid-json",
        ),
        pytest.param(
            JSONReply({"id": "x", "object": "chat.completion", "choices": []}),
            anthropic.InternalServerError,
            502,
            "api_error",
            id="200-no-choices",
        ),
        pytest.param(
            JSONReply({"choices": "nope"}),
            anthropic.InternalServerError,
            502,
            "api_error",
            id="200-not-a-completion",
        ),
        pytest.param(
            Hangup(),
            anthropic.InternalServerError,
            500,
            "api_error",
            id="hangup",
        ),
    ],
)
def test_upstream_error_mapping(
    client: anthropic.Anthropic,
    upstream: FakeUpstream,
    reply: JSONReply | RawReply | Hangup,
    exc_class: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
) -> None:
    upstream.reply(reply)

    with pytest.raises(exc_class) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    message = assert_sdk_error(caught.value, status, error_type)
    assert UPSTREAM_KEY not in message
    if isinstance(reply, JSONReply) and reply.status >= 400:
        # The upstream's own words reach the client.
        assert reply.body["error"]["message"] in message
    assert len(upstream.requests) == 1


def test_a_refused_upstream_key_says_whose_key_it_was(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """Not a bare `authentication_error` (which Claude Code answers by asking the user to log
    in to Anthropic): the upstream, by host, refused the key the proxy sends."""
    upstream.reply(
        JSONReply(error_body("Incorrect API key provided: ****", code="invalid_api_key"), 401)
    )
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    message = assert_sdk_error(caught.value, 502, "api_error")
    host = upstream.base_url.split("://", 1)[1].split("/", 1)[0]
    assert message.startswith(f"upstream {host} refused the API key claude-bridge sends it")
    assert "the client's own key is never forwarded" in message
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_context_length_error_uses_anthropic_wording(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(
        JSONReply(
            error_body(CONTEXT_MESSAGE, "invalid_request_error", "context_length_exceeded"),
            status=400,
        )
    )

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    message = assert_sdk_error(caught.value, 400, "invalid_request_error")
    assert message == "prompt is too long: 130532 tokens > 128000 maximum"
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_rate_limit_keeps_retry_after(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.reply(
        JSONReply(
            error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            status=429,
            headers={"retry-after": "7", "retry-after-ms": "7000", "x-ratelimit-remaining": "0"},
        )
    )

    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert_sdk_error(caught.value, 429, "rate_limit_error")
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["retry-after-ms"] == "7000"


def test_insufficient_quota_429_is_billing(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.reply(
        JSONReply(
            error_body(
                "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
            ),
            status=429,
        )
    )

    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert_sdk_error(caught.value, 402, "billing_error")


def test_html_error_page(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
        "</h1></center><hr><center>nginx</center></body></html>"
    )
    upstream.reply(RawReply(page, status=502))

    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    message = assert_sdk_error(caught.value, 500, "api_error")
    assert "502 Bad Gateway" in message
    assert "<" not in message


def test_connection_refused(make_bridge: Callable[..., Bridge], upstream: FakeUpstream) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    bridge = make_bridge(openai_base_url=f"http://127.0.0.1:{closed_port}/v1")

    with make_client(bridge) as sdk, pytest.raises(anthropic.InternalServerError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    message = assert_sdk_error(caught.value, 500, "api_error")
    assert f"127.0.0.1:{closed_port}" in message
    assert UPSTREAM_KEY not in message


def test_upstream_read_timeout(make_bridge: Callable[..., Bridge], upstream: FakeUpstream) -> None:
    bridge = make_bridge(read_timeout=0.3)
    upstream.reply(SSEReply([], end="stall"))  # headers, then silence

    with make_client(bridge) as sdk, pytest.raises(anthropic.InternalServerError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    message = assert_sdk_error(caught.value, 504, "timeout_error")
    assert f"127.0.0.1:{upstream.port}" in message
    assert upstream.wait_disconnect(timeout=5)  # and the bridge gave up the connection


# -- bad client input: 400 before anything goes upstream ---------------------------------


def _valid(**changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 10, "messages": HI, **changes}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"model": "claude", "max_tokens": 1,', "not valid JSON", id="malformed-json"
        ),
        pytest.param(b"", "not valid JSON", id="empty-body"),
        pytest.param(b"[1, 2]", "JSON object", id="not-an-object"),
        pytest.param(
            {"model": MODEL, "messages": HI}, "max_tokens: Field required", id="missing-max-tokens"
        ),
        pytest.param(_valid(max_tokens="lots"), "max_tokens:", id="max-tokens-not-int"),
        pytest.param(
            _valid(
                messages=[
                    {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image"}]}
                ]
            ),
            "messages.0.content.1.source: Field required",
            id="block-missing-source",
        ),
        pytest.param(
            _valid(messages=[{"role": "robot", "content": "beep"}]),
            "messages.0.role:",
            id="unknown-role",
        ),
        pytest.param(
            _valid(messages=[{"role": "user", "content": [{"type": "hologram", "text": "x"}]}]),
            "messages.0.content.0.type: unknown type 'hologram'",
            id="unknown-block-type",
        ),
        pytest.param(
            _valid(
                messages=[
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "name": "x", "input": {}}],
                    },
                ]
            ),
            "messages.1.content.0.id: Field required",
            id="tool-use-missing-id",
        ),
        pytest.param(
            _valid(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
                        ],
                    }
                ]
            ),
            "not supported",
            id="image-file-source",
        ),
    ],
)
def test_bad_request_never_reaches_upstream(
    http: httpx.Client, upstream: FakeUpstream, body: bytes | dict[str, Any], expected: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    response = http.post(
        "/v1/messages", content=content, headers={"content-type": "application/json"}
    )

    message = assert_error_shape(response, 400, "invalid_request_error")
    assert expected in message
    assert upstream.requests == []


def test_bad_request_through_the_sdk(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=cast(Any, [{"role": "user", "content": [{"type": "image"}]}]),
        )

    message = assert_sdk_error(caught.value, 400, "invalid_request_error")
    assert message.startswith("messages.0.content.0.source: Field required")
    assert upstream.requests == []


def test_azure_profile_sends_api_key_and_version(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    """Azure wants its key as `api-key` and an `api-version` on deployment URLs."""
    bridge = make_bridge(
        openai_base_url=f"http://127.0.0.1:{upstream.port}/openai/deployments/gpt-4o",
        provider="azure",
        azure_api_version="2024-10-21",
    )
    upstream.reply(JSONReply(completion("hi")))

    with make_client(bridge) as sdk:
        sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    received = upstream.last
    assert received.target == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert received.headers["api-key"] == UPSTREAM_KEY
    assert "authorization" not in received.headers
