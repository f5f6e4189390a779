"""Property-based fuzzing of what upstreams answer (hypothesis), as tests/test_fuzz.py fuzzes
what clients send: whatever the upstream's bytes, the client gets a valid Anthropic answer.

* Streams (chat completion chunks, and pass-through Anthropic events) with random chunk and
  usage shapes, garbage, deep nesting, lone surrogates, invalid UTF-8, any SSE line ends,
  compressed or not, cut at any points: a valid event stream (`proxy/core/checker.py`) that
  ends in `message_stop` or `error`.
* JSON answers of the same making: a valid message, or a 502 `api_error`.
* Any status with any body: an Anthropic error; one that is neither an answer nor an error
  (1xx, 3xx, past 599) a 502.

The app runs in process (Starlette's TestClient); the upstream is an `httpx.MockTransport`
answering unread bodies in the scripted pieces, so the proxy reads them as it reads the
network's (raw, inflated in bounded steps). Examples are bounded and the database is off.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from conftest import IN_PROCESS_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core.checker import check_stream, check_wire

# More for a deep run: CLAUDE_BRIDGE_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_upstream.py
EXAMPLES = int(os.environ.get("CLAUDE_BRIDGE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ANSWERS = {400, 401, 402, 403, 404, 413, 429, 500, 502, 504, 529}

# -- the scripted upstream ----------------------------------------------------------------

Answer = tuple[int, dict[str, str], list[bytes]]


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


class Upstream:
    """Answers every request with `answer`: status, headers, body pieces, unread."""

    answer: Answer = (200, {}, [])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status, headers, pieces = self.answer
        return httpx.Response(status, headers=headers, stream=Pieces(pieces))


UPSTREAM = Upstream()


def in_process(**overrides: Any) -> Iterator[TestClient]:
    settings = Settings(openai_base_url="http://upstream.test/v1", big_model="big", **overrides)
    app = create_app(settings, transport=httpx.MockTransport(UPSTREAM))
    with TestClient(app, base_url=IN_PROCESS_URL, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    yield from in_process()


@pytest.fixture(scope="module")
def passthrough() -> Iterator[TestClient]:
    yield from in_process(mode="anthropic")


def ask(client: TestClient, answer: Answer, stream: bool) -> Any:  # TestClient's response
    UPSTREAM.answer = answer
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/messages", json={**body, "stream": stream})


# -- what upstreams send ------------------------------------------------------------------

SURROGATES = ["", "", "\ud800", "\udfff", "\udbff", "\ud83d", "\ude00"]
# Text, often with a lone surrogate in it: `json.dumps` writes it as a `\ud800` escape.
text = st.builds(
    lambda a, lone, b: a + lone + b,
    st.text(max_size=5),
    st.sampled_from(SURROGATES),
    st.text(max_size=5),
)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=4,
)
count = st.integers(-5, 10**6) | anything
usage = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": count,
        "completion_tokens": count,
        "total_tokens": count,
        "prompt_tokens_details": st.fixed_dictionaries({}, optional={"cached_tokens": count})
        | anything,
        "completion_tokens_details": st.fixed_dictionaries({}, optional={"reasoning_tokens": count})
        | anything,
        "timings": st.fixed_dictionaries({}, optional={"cache_n": count}) | anything,
        "prompt_cache_hit_tokens": count,
    },
)
fragment = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(0, 3) | anything,
        "id": st.sampled_from(["call_1", "call_2", "toolu_x"]) | text | anything,
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["run", "read"]) | text | anything,
                "arguments": st.sampled_from(['{"a": 1', "}", '"x"', "[", ""]) | text | anything,
            },
        )
        | anything,
    },
)
delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": text | anything,
        "reasoning_content": text | anything,
        "reasoning": text,
        "refusal": text,
        "tool_calls": st.lists(fragment | anything, max_size=2) | anything,
        "reasoning_details": st.lists(anything, max_size=2),
    },
)
finish = st.sampled_from(["stop", "length", "tool_calls", "content_filter", "error"]) | anything
choice = st.fixed_dictionaries(
    {"index": st.just(0), "delta": delta | anything},
    optional={"finish_reason": finish, "native_finish_reason": anything, "stop_reason": anything},
)
chunk = st.fixed_dictionaries(
    {"choices": st.lists(choice | anything, max_size=1) | anything},
    optional={"usage": usage | anything, "timings": anything, "id": anything},
)
error_chunk = st.fixed_dictionaries({"error": anything | st.fixed_dictionaries({"message": text})})


def deep(depth: int) -> str:
    return '{"a":' * depth + "[]" + "}" * depth


depths = st.sampled_from([5, 128, 129, 1000, 100_000])
# The `data` of one upstream SSE event: JSON text (lone surrogates escaped), or not JSON.
openai_data = st.one_of(
    chunk.map(json.dumps),
    chunk.map(json.dumps),
    error_chunk.map(json.dumps),
    anything.map(json.dumps),
    depths.map(deep),
    st.just("[DONE]"),
    text.map(lambda t: t.encode("utf-8", "replace").decode()),
)


@st.composite
def sse_body(draw: st.DrawFn, data: st.SearchStrategy[str]) -> bytes:
    """Events as an upstream might frame them: any line ends, named or not, with comments and
    invalid UTF-8 among them, and maybe a proper end."""
    end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    parts: list[bytes] = []
    for item in draw(st.lists(data, max_size=6)):
        name = draw(st.sampled_from([b"", b"event: message\n", b": keep-alive\n"]))
        parts.append(name.replace(b"\n", end) + b"data: " + item.encode() + end + end)
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(st.binary(max_size=12)) + end)
    if draw(st.booleans()):
        parts.append(b"data: [DONE]" + end + end)
    return b"".join(parts)


CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}


@st.composite
def delivered(draw: st.DrawFn, body: st.SearchStrategy[bytes], status: int = 200) -> Answer:
    """`body` compressed (or not), cut into pieces at any points."""
    coding = draw(st.sampled_from(sorted(CODINGS)))
    data = CODINGS[coding](draw(body))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    headers = {"content-type": "text/event-stream"}
    if coding:
        headers["content-encoding"] = coding
    return status, headers, pieces


# -- streams ------------------------------------------------------------------------------


def events_of(response: Any) -> list[dict[str, Any]]:
    """The events of a 200 SSE answer, its wire format checked."""
    assert response.status_code == 200, response.text[:300]
    assert check_wire(response.content) == [], response.content[-600:]
    return [
        json.loads(line[6:])
        for line in response.content.decode().split("\n")
        if line.startswith("data: ")
    ]


@FUZZ
@given(answer=delivered(sse_body(openai_data)))
def test_any_chunk_stream_ends_in_a_valid_event_sequence(
    client: TestClient, answer: Answer
) -> None:
    events = events_of(ask(client, answer, stream=True))
    assert check_stream(events) == [], events
    assert events[-1]["type"] in ("message_stop", "error")


anthropic_event = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["message_start", "content_block_delta", "ping", "error"])},
        optional={"message": anything, "delta": anything, "index": anything, "error": anything},
    ),
    st.just({"type": "message_stop"}),
    st.fixed_dictionaries({"type": text | anything}),
    anything,
)
anthropic_data = anthropic_event.map(json.dumps) | depths.map(deep)


@FUZZ
@given(answer=delivered(sse_body(anthropic_data)))
def test_any_passthrough_stream_ends_in_message_stop_or_error(
    passthrough: TestClient, answer: Answer
) -> None:
    """Pass-through relays the upstream's events as they are: the proxy owes a wire format the
    SDKs read, and an end."""
    events = events_of(ask(passthrough, answer, stream=True))
    assert events and events[-1]["type"] in ("message_stop", "error")
    assert all(
        isinstance(e.get("error", {}).get("type"), str) for e in events if e["type"] == "error"
    )


# -- JSON answers -------------------------------------------------------------------------

message = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "content": text | anything,
        "reasoning_content": text | anything,
        "tool_calls": st.lists(fragment, max_size=2) | anything,
        "refusal": text | anything,
    },
)
completion = st.fixed_dictionaries(
    {"choices": st.lists(st.fixed_dictionaries({"message": message | anything}), max_size=1)},
    optional={"usage": usage | anything, "timings": anything, "model": anything},
)
json_body = st.one_of(
    completion.map(json.dumps),
    completion.map(json.dumps),
    anything.map(json.dumps),
    depths.map(deep),
    text,
).map(lambda t: t.encode("utf-8", "replace")) | st.binary(max_size=30)


@FUZZ
@given(answer=delivered(json_body))
def test_any_json_answer_is_a_message_or_a_502(client: TestClient, answer: Answer) -> None:
    response = ask(client, answer, stream=False)
    response.content.decode("utf-8")  # strict
    if response.status_code == 200:
        anthropic.types.Message.model_validate(response.json())
        assert check_stream(as_events(response.json())) == []
    else:
        assert response.status_code == 502, response.text
        assert response.json()["error"]["type"] == "api_error"


def as_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message as the events that would stream it, for the checker's block rules."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    for index, block in enumerate(message["content"]):
        start = {**block, "input": {}} if block["type"] == "tool_use" else block
        if block["type"] in ("text", "thinking"):
            start = {k: "" if isinstance(v, str) and k != "type" else v for k, v in block.items()}
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if block["type"] == "tool_use":
            partial = json.dumps(block["input"])
            delta = {"type": "input_json_delta", "partial_json": partial}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        elif block["type"] == "thinking":
            delta = {"type": "signature_delta", "signature": block["signature"]}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append({"type": "message_delta", "delta": delta, "usage": message["usage"]})
    return [*events, {"type": "message_stop"}]


# -- statuses -----------------------------------------------------------------------------


@FUZZ
@given(
    status=st.integers(100, 999).filter(lambda s: not 200 <= s <= 299),
    body=json_body,
    stream=st.booleans(),
    location=st.none() | st.sampled_from(["https://elsewhere.example/v1", "/v2"]),
)
def test_any_status_is_an_anthropic_error(
    client: TestClient, status: int, body: bytes, stream: bool, location: str | None
) -> None:
    headers = {"location": location} if location else {}
    response = ask(client, (status, headers, [body]), stream)
    error = response.json()
    assert error["type"] == "error" and isinstance(error["error"]["type"], str), error
    if 400 <= status <= 599:
        assert response.status_code == status or response.status_code in ANSWERS
    else:
        assert response.status_code == 502 and f"HTTP {status}" in error["error"]["message"]
