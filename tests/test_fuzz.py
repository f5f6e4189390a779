"""Property-based fuzzing of the two request bodies (hypothesis).

* Random valid Messages requests translate and are answered (200) on both endpoints, and what
  goes upstream is strict JSON.
* Random invalid bodies (bytes that are not JSON, wrong types, unknown block types, deep nesting,
  huge strings and numbers) are a 400 `invalid_request_error`: never a 500, never sent upstream.
* Bodies over 32 MB are a 413 `request_too_large`.

The app runs in process (Starlette's TestClient) with the upstream an `httpx.MockTransport` that
counts what reaches it: thousands of examples take seconds. Examples are bounded and the
hypothesis database is off, so runs are deterministic in time and write nothing.
"""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import IN_PROCESS_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from claude_bridge.proxy.app import MAX_BODY, create_app
from claude_bridge.proxy.config import Settings

# More for a deep run: CLAUDE_BRIDGE_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py
EXAMPLES = int(os.environ.get("CLAUDE_BRIDGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# For properties whose examples are big (megabytes, thousands of levels): fewer of them.
FUZZ_BIG = settings(FUZZ, max_examples=max(EXAMPLES // 5, 10))
ENDPOINTS = ["/v1/messages", "/v1/messages/count_tokens"]
SSE_ANSWER = (
    'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"ok"}}]}\n\n'
    'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    "data: [DONE]\n\n"
)
COMPLETION = {
    "id": "chatcmpl-fuzz",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Upstream:
    """The mock upstream: answers like OpenAI, and keeps what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        if json.loads(request.content).get("stream"):
            return httpx.Response(
                200, content=SSE_ANSWER.encode(), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=COMPLETION)


UPSTREAM = Upstream()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(openai_base_url="http://upstream.test/v1", big_model="big")
    app = create_app(settings, transport=httpx.MockTransport(UPSTREAM))
    with TestClient(app, base_url=IN_PROCESS_URL, raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, path: str, content: bytes) -> Any:  # TestClient's response type
    return client.post(path, content=content, headers={"content-type": "application/json"})


def assert_invalid(
    client: TestClient, content: bytes, endpoints: tuple[str, ...] = tuple(ENDPOINTS)
) -> None:
    """400 invalid_request_error on the endpoints, and nothing sent upstream."""
    before = len(UPSTREAM.bodies)
    for path in endpoints:
        response = post(client, path, content)
        assert response.status_code == 400, (path, content[:300], response.text[:300])
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"]
    assert len(UPSTREAM.bodies) == before, "an invalid request reached the upstream"


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


# -- valid requests -----------------------------------------------------------------------

text = st.text(max_size=40)
short_id = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=30)
tool_name = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_-]{0,40}", fullmatch=True)
cache_control = (
    st.none() | st.just({"type": "ephemeral"}) | st.just({"type": "ephemeral", "ttl": "1h"})
)
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_object = st.dictionaries(text, json_value, max_size=5)
schema = st.fixed_dictionaries(
    {"type": st.just("object")},
    optional={
        "properties": st.dictionaries(
            tool_name, st.sampled_from([{"type": "string"}, {"type": "integer"}]), max_size=4
        ),
        "required": st.lists(tool_name, max_size=3),
        "description": text,
    },
)


def with_cache(block: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda cc: {**block, **({"cache_control": cc} if cc else {})}, cache_control)


text_block = st.builds(lambda t: {"type": "text", "text": t}, text).flatmap(with_cache)
image_block = st.one_of(
    st.builds(
        lambda media, data: {
            "type": "image",
            "source": {"type": "base64", "media_type": media, "data": data},
        },
        st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]),
        st.binary(min_size=1, max_size=30).map(lambda data: base64.b64encode(data).decode()),
    ),
    st.builds(
        lambda url: {"type": "image", "source": {"type": "url", "url": url}},
        st.sampled_from(["https://example.com/cat.png", "http://127.0.0.1:9/never-fetched.png"]),
    ),
)
document_block = st.builds(
    lambda source, title: {"type": "document", "source": source, **title},
    st.one_of(
        st.builds(
            lambda d: {"type": "base64", "media_type": "application/pdf", "data": d},
            st.binary(max_size=15).map(lambda data: base64.b64encode(data).decode()),
        ),
        st.builds(lambda d: {"type": "text", "media_type": "text/plain", "data": d}, text),
        st.builds(lambda c: {"type": "content", "content": c}, st.lists(text_block, max_size=2)),
        st.just({"type": "url", "url": "https://example.com/paper.pdf"}),
    ),
    st.fixed_dictionaries({}, optional={"title": text, "context": text}),
)
tool_use_block = st.builds(
    lambda id_, name, args: {"type": "tool_use", "id": id_, "name": name, "input": args},
    short_id,
    tool_name,
    json_object,
)
tool_result_block = st.builds(
    lambda id_, content, error: {
        "type": "tool_result",
        "tool_use_id": id_,
        **({"content": content} if content is not None else {}),
        **({"is_error": error} if error is not None else {}),
    },
    short_id,
    st.none() | text | st.lists(text_block | image_block, max_size=3),
    st.none() | st.booleans(),
)
thinking_block = st.builds(
    lambda t, sig: {"type": "thinking", "thinking": t, "signature": sig}, text, text
)
redacted_block = st.builds(lambda d: {"type": "redacted_thinking", "data": d}, text)
user_content = text | st.lists(
    text_block | image_block | document_block | tool_result_block, min_size=1, max_size=4
)
assistant_content = text | st.lists(
    text_block | tool_use_block | thinking_block | redacted_block, min_size=1, max_size=4
)


@st.composite
def conversation(draw: st.DrawFn) -> list[dict[str, Any]]:
    turns = draw(st.integers(1, 6))
    messages = []
    offered: list[str] = []  # tool_use ids of the last assistant turn
    previous = ""
    for turn in range(turns):
        role = "user" if turn % 2 == 0 else "assistant"
        if draw(st.integers(0, 9)) == 0:
            role = draw(st.sampled_from(["user", "assistant", "system"]))
        content = draw(user_content if role != "assistant" else assistant_content)
        blocks = content if isinstance(content, list) else []
        if role == "assistant":
            called = [block["id"] for block in blocks if block["type"] == "tool_use"]
            offered = offered + called if previous == "assistant" else called
        elif role == "user":
            content = [answering(block, offered, draw) for block in blocks] or content
        if role != "system":
            previous = role
        messages.append({"role": role, "content": content})
    return messages


def answering(block: dict[str, Any], offered: list[str], draw: st.DrawFn) -> dict[str, Any]:
    """A `tool_result` answers a `tool_use` of the assistant turn before it (the API's rule)."""
    if block["type"] != "tool_result":
        return block
    if not offered:
        return {"type": "text", "text": "no tool was called"}
    return {**block, "tool_use_id": draw(st.sampled_from(offered))}


custom_tool = st.builds(
    lambda name, description, schema_: {
        "name": name,
        "input_schema": schema_,
        **({"description": description} if description is not None else {}),
    },
    tool_name,
    st.none() | text,
    schema,
).flatmap(with_cache)
builtin_tool = st.sampled_from(
    [
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ]
)
tool_choice = st.sampled_from(
    [
        {"type": "auto"},
        {"type": "any"},
        {"type": "none"},
        {"type": "auto", "disable_parallel_tool_use": True},
    ]
) | st.builds(lambda name: {"type": "tool", "name": name}, tool_name)
thinking = st.sampled_from([{"type": "adaptive"}, {"type": "disabled"}]) | st.builds(
    lambda budget: {"type": "enabled", "budget_tokens": budget}, st.integers(1024, 64000)
)
system = text | st.lists(
    st.builds(lambda t: {"type": "text", "text": t}, text).flatmap(with_cache), max_size=3
)
unit = st.floats(0, 1, allow_nan=False)

optional_fields: dict[str, st.SearchStrategy[Any]] = {
    "system": system,
    "tools": st.lists(custom_tool | builtin_tool, max_size=4),
    "tool_choice": tool_choice,
    "thinking": thinking,
    "temperature": unit,
    "top_p": unit,
    "top_k": st.integers(1, 500),
    "stop_sequences": st.lists(text, max_size=5),
    "metadata": st.builds(lambda user: {"user_id": user}, short_id),
    "stream": st.booleans(),
    "output_config": st.builds(
        lambda effort: {"effort": effort}, st.sampled_from(["low", "medium", "high", "max"])
    ),
    "service_tier": st.sampled_from(["auto", "standard_only"]),
    "some_future_field": json_value,
}
valid_request = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1"])
        | text,
        "max_tokens": st.integers(1, 128000),
        "messages": conversation(),
    },
    optional=optional_fields,
)


@FUZZ
@given(request=valid_request)
def test_valid_requests_are_answered(client: TestClient, request: dict[str, Any]) -> None:
    before = len(UPSTREAM.bodies)

    response = post(client, "/v1/messages", dumps(request))

    assert response.status_code == 200, (request, response.text[:500])
    sent = UPSTREAM.bodies[before:]
    assert len(sent) == 1
    upstream_body = json.loads(sent[0], parse_constant=_no_constants)  # strict JSON
    assert upstream_body["messages"] is not None
    if request.get("stream"):
        assert response.text.rstrip().endswith('data: {"type":"message_stop"}')
    else:
        assert response.json()["type"] == "message"

    counted = post(client, "/v1/messages/count_tokens", dumps(request))
    assert counted.status_code == 200, counted.text[:500]
    assert counted.json()["input_tokens"] >= 0
    assert len(UPSTREAM.bodies) == before + 1, "count_tokens is offline"


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the bridge sent {name} upstream: not JSON")


def test_lone_surrogates_are_not_a_500(client: TestClient) -> None:
    """A `\\ud83d` escape cut from its pair (a truncated tool output) has no UTF-8 form: a 400
    naming the field, as issue 13 asks (tests/test_client_input.py has the other places)."""
    content = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a\\ud83d b"}]}'

    assert_invalid(client, content)
    message = post(client, "/v1/messages", content).json()["error"]["message"]
    assert message.startswith("messages.0.content: ")


# -- invalid requests ---------------------------------------------------------------------


@FUZZ
@given(content=st.binary(max_size=200))
def test_random_bytes(client: TestClient, content: bytes) -> None:
    assert_invalid(client, content)


@FUZZ
@given(content=json_value)
def test_json_that_is_not_a_request(client: TestClient, content: Any) -> None:
    if isinstance(content, dict):
        content.pop("model", None)  # so that it is never a request by chance
    assert_invalid(client, dumps(content))


not_a_string = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.lists(json_scalar, max_size=3)
    | (st.dictionaries(text, json_scalar, max_size=3))
)
not_an_int = (
    st.lists(json_scalar, max_size=3)
    | st.dictionaries(text, json_scalar, max_size=3)
    | st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f))
    | st.integers(max_value=-1)
)
not_a_number = (
    st.lists(json_scalar, max_size=3)
    | st.dictionaries(text, json_scalar, max_size=3)
    | st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=20)
)
not_a_list = st.none() | st.integers() | st.dictionaries(text, json_scalar, max_size=3)
known_block_types = {
    "text", "image", "document", "search_result", "tool_result", "container_upload",
    "thinking", "mid_conv_system", "redacted_thinking", "tool_use", "server_tool_use",
    "mcp_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result", "tool_search_tool_result", "mcp_tool_result",
    "tool_reference",
}  # fmt: skip
unknown_block = st.builds(
    lambda kind, extra: {"type": kind, **extra},
    text.filter(lambda kind: kind not in known_block_types),
    st.dictionaries(st.sampled_from(["text", "id", "source"]), json_scalar, max_size=2),
)


# Fields count_tokens does not take (it ignores them, as unknown fields).
MESSAGES_ONLY = ("max_tokens", "stream", "temperature")


@st.composite
def broken_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid request with one thing wrong in it, and what."""
    request: dict[str, Any] = draw(valid_request)
    request.pop("some_future_field", None)
    fault = draw(
        st.sampled_from(
            [
                "model",
                "no_model",
                "max_tokens",
                "messages",
                "message",
                "role",
                "content",
                "block",
                "system",
                "tools",
                "stream",
                "temperature",
            ]
        )
    )
    if fault == "model":
        request["model"] = draw(not_a_string)
    elif fault == "no_model":
        del request["model"]
    elif fault == "max_tokens":
        request["max_tokens"] = draw(not_an_int | st.none())
    elif fault == "messages":
        request["messages"] = draw(not_a_list | st.text(min_size=1, max_size=5))
    elif fault == "message":
        index = draw(st.integers(0, len(request["messages"]) - 1))
        request["messages"][index] = draw(not_a_string.filter(lambda v: not isinstance(v, dict)))
    elif fault == "role":
        index = draw(st.integers(0, len(request["messages"]) - 1))
        role = text.filter(lambda r: r not in ("user", "assistant", "system"))
        request["messages"][index]["role"] = draw(role | st.none() | st.integers())
    elif fault == "content":
        index = draw(st.integers(0, len(request["messages"]) - 1))
        request["messages"][index]["content"] = draw(
            st.none() | st.integers() | st.dictionaries(text, json_scalar, max_size=3)
        )
    elif fault == "block":
        index = draw(st.integers(0, len(request["messages"]) - 1))
        message = request["messages"][index]
        blocks = message["content"]
        if isinstance(blocks, str):
            blocks = [{"type": "text", "text": blocks}]
        position = draw(st.integers(0, len(blocks)))
        message["content"] = [*blocks[:position], draw(unknown_block), *blocks[position:]]
    elif fault == "system":
        request["system"] = draw(st.integers() | st.dictionaries(text, json_scalar, max_size=3))
    elif fault == "tools":
        request["tools"] = draw(
            st.integers()
            | st.just([{"name": "no_schema"}])
            | st.just([{"name": "x", "input_schema": "not an object"}])
            | st.just([{"description": "no name", "input_schema": {}}])
        )
    elif fault == "stream":
        request["stream"] = draw(
            st.lists(json_scalar, max_size=2) | st.just("maybe") | st.integers(2, 10)
        )
    else:
        request["temperature"] = draw(not_a_number)
    return fault, request


@FUZZ
@given(case=broken_request())
def test_wrong_types_and_unknown_blocks(
    client: TestClient, case: tuple[str, dict[str, Any]]
) -> None:
    fault, request = case
    endpoints = ENDPOINTS[:1] if fault in MESSAGES_ONLY else ENDPOINTS
    assert_invalid(client, dumps(request), tuple(endpoints))


@FUZZ_BIG
@given(
    depth=st.integers(129, 20_000),
    opener=st.sampled_from(["[", '{"a":']),
    where=st.sampled_from(["metadata", "tool_input", "top"]),
)
def test_deep_nesting(client: TestClient, depth: int, opener: str, where: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    messages = '[{"role":"user","content":"hi"}]'
    if where == "tool_input":
        messages = (
            '[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n",'
            f'"input":{{"x":{nested}}}}}]}}]'
        )
        nested = "null"
    content = f'{{"model":"m","max_tokens":5,"messages":{messages},"metadata":{nested}}}'
    if where == "top":
        content = nested
    assert_invalid(client, content.encode())


@pytest.mark.parametrize(
    "number",
    [
        "1e999",
        "-1e999",
        "NaN",
        "Infinity",
        "-Infinity",
        "1" + "0" * 5000,  # past Python's 4300 digit limit for int()
    ],
)
@pytest.mark.parametrize("field", ["max_tokens", "temperature", "top_k"])
def test_numbers_json_cannot_carry(client: TestClient, number: str, field: str) -> None:
    content = (
        '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],'
        f'"{field}":{number}}}'
    )
    assert_invalid(client, content.encode(), ("/v1/messages",))


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e999"])
def test_numbers_json_cannot_carry_in_free_form_objects(client: TestClient, number: str) -> None:
    """Inside a tool schema nothing is typed: Python's parser takes NaN, JSON does not."""
    content = (
        '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],'
        f'"tools":[{{"name":"t","input_schema":{{"type":"object","default":{number}}}}}]}}'
    )
    assert_invalid(client, content.encode(), ("/v1/messages",))


def test_count_tokens_refuses_numbers_json_cannot_carry(client: TestClient) -> None:
    content = (
        '{"model":"m","messages":[{"role":"user","content":"hi"}],'
        '"tools":[{"name":"t","input_schema":{"type":"object","default":NaN}}]}'
    )
    response = post(client, "/v1/messages/count_tokens", content.encode())
    assert response.status_code == 400
    assert "NaN is not a JSON number" in response.json()["error"]["message"]


@FUZZ_BIG
@given(
    size=st.integers(100_000, 2_000_000),
    field=st.sampled_from(["max_tokens", "messages", "stream", "tools", "role"]),
)
def test_huge_strings_in_the_wrong_place(client: TestClient, size: int, field: str) -> None:
    huge = "9" * size
    request: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": [], "stream": False}
    if field == "role":
        request["messages"] = [{"role": huge, "content": "hi"}]
    else:
        request[field] = huge
    endpoints = ENDPOINTS[:1] if field in MESSAGES_ONLY else ENDPOINTS
    assert_invalid(client, dumps(request), tuple(endpoints))


def test_huge_valid_strings_are_fine(client: TestClient) -> None:
    """A 20 MB prompt is a request like any other (under the 32 MB limit)."""
    request = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "word " * (4 * 1024 * 1024)}],
    }
    response = post(client, "/v1/messages", dumps(request))
    assert response.status_code == 200, response.text[:300]


# -- body size ----------------------------------------------------------------------------


def oversized() -> bytes:
    prefix = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"'
    return prefix + b"x" * (MAX_BODY - len(prefix) + 1) + b'"}]}'


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_over_32_mb_is_413(client: TestClient, path: str) -> None:
    before = len(UPSTREAM.bodies)

    response = post(client, path, oversized())

    assert response.status_code == 413
    error = response.json()
    assert error["error"]["type"] == "request_too_large"
    assert len(UPSTREAM.bodies) == before


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_over_32_mb_without_length_is_413(client: TestClient, path: str) -> None:
    """Chunked, so no `content-length` to refuse it by: counted as it arrives."""
    body = oversized()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 1024 * 1024):
            yield body[start : start + 1024 * 1024]

    response = client.post(path, content=pieces(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_body_of_exactly_32_mb_is_read(client: TestClient) -> None:
    prefix = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"'
    suffix = b'"}]}'
    content = prefix + b"x" * (MAX_BODY - len(prefix) - len(suffix)) + suffix
    assert len(content) == MAX_BODY

    # (Not count_tokens: BPE over 32 MB of one word takes a minute.)
    response = post(client, "/v1/messages", content)

    assert response.status_code == 200


def test_a_stream_answered_with_a_body_already_read(client: TestClient) -> None:
    """A transport may hand back a response whose body it read already (httpx's own mock
    transport does): the relay reads it from memory rather than failing."""
    hi = [{"role": "user", "content": "hi"}]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "stream": True, "messages": hi}
    response = post(client, "/v1/messages", dumps(body))
    assert response.status_code == 200
    assert "message_stop" in response.text and "event: error" not in response.text
