"""Upstream faults over real HTTP: each one gives the client an Anthropic answer it understands
(a status and error type before streaming began, an `error` event after), within the configured
timeout, and the bridge goes on serving.

The upstream is the scripted server of tests/upstream.py on loopback; the bridges here have short
timeouts (connect 0.4 s, read 0.8 s) so that the whole file runs in seconds. What each fault maps
to is the table of PROTOCOL.md 8.7, extended to transport failures:

| fault                                   | before streaming          | once streaming       |
|-----------------------------------------|---------------------------|----------------------|
| connection refused, DNS failure         | 500 api_error (retried)   |                      |
| connect timeout                         | 504 timeout_error         |                      |
| no headers within read_timeout          | 504 timeout_error         |                      |
| no event within read_timeout (stall,    |                           | error timeout_error  |
| or a drip too slow to make one)         | 504 timeout_error         |                      |
| 400, 422 / 401, 403 / 404 / 413         | 400 / 502 (key refused) / 404 / 413              |
| 429                                     | 429 rate_limit_error + retry-after               |
| 500, 502 / 503 / 504                    | 500 api_error / 529 overloaded_error /           |
|                                         | 504 timeout_error (502, 503 retried)             |
| 200 that is not JSON, or too big        | 502 api_error             |                      |
| cut connection, body that never ends    |                           | error api_error      |
| mid-stream `error` chunk                |                           | error, mapped type   |
| SSE garbage line                        | ignored (SSE rules)       |                      |
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from conftest import (
    UPSTREAM_KEY,
    Bridge,
    bridge_settings,
    make_client,
    make_http,
    serving,
    start_bridge,
)
from upstream import (
    FakeUpstream,
    Hangup,
    JSONReply,
    Pause,
    RawReply,
    Reply,
    Silence,
    SSEReply,
    chunk,
    completion,
    text_stream,
)

from claude_bridge.proxy import pipeline as pipeline_module
from claude_bridge.proxy import upstream as upstream_module
from claude_bridge.proxy.core.checker import check_stream, check_wire

MODEL = "claude-sonnet-4-6"
HI = [{"role": "user", "content": "Hi"}]
CONNECT_TIMEOUT = 0.4
READ_TIMEOUT = 0.8
# Scheduling on a loaded CI machine: a timeout may fire this much late and still be "in time".
SLACK = 1.5
FAST = {
    "connect_timeout": CONNECT_TIMEOUT,
    "read_timeout": READ_TIMEOUT,
    "ping_interval": 0.25,
    "retries": 0,
}

Event = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def fast_bridge(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    yield from serving(upstream_server.base_url, **FAST)


@pytest.fixture(scope="module")
def retrying_bridge(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    yield from serving(upstream_server.base_url, **{**FAST, "retries": 2, "retry_backoff": 0.05})


@pytest.fixture
def fast(fast_bridge: Bridge, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with make_http(fast_bridge) as http:
        yield http
    still_serves(fast_bridge, upstream)


@pytest.fixture
def retrying(retrying_bridge: Bridge, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with make_http(retrying_bridge) as http:
        yield http
    still_serves(retrying_bridge, upstream)


@pytest.fixture
def make_fast_bridge(make_bridge: Callable[..., Bridge]) -> Callable[..., Bridge]:
    return lambda **overrides: make_bridge(**{**FAST, **overrides})


# -- helpers ------------------------------------------------------------------------------


def body(stream: bool = False, **changes: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 50, "messages": HI, "stream": stream, **changes}


def still_serves(bridge: Bridge, upstream: FakeUpstream) -> None:
    """The bridge answers a plain request and a stream after the fault."""
    upstream.reset()
    upstream.reply(JSONReply(completion("still here")), SSEReply(text_stream(["still ", "here"])))
    with make_http(bridge) as http:
        response = http.post("/v1/messages", json=body())
        assert response.status_code == 200, response.text
        assert response.json()["content"][0]["text"] == "still here"
        raw = http.post("/v1/messages", json=body(stream=True)).content
    events = parse_events(raw)
    assert events[-1][0] == "message_stop"
    texts = [p["delta"]["text"] for n, p in events if n == "content_block_delta"]
    assert "".join(texts) == "still here"


def parse_events(raw: bytes) -> list[Event]:
    """(name, payload) of each event, the wire format and the event grammar checked."""
    assert check_wire(raw) == [], raw
    events: list[Event] = []
    for block in raw.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    assert check_stream([payload for _, payload in events]) == []
    return events


def assert_error(response: httpx.Response, status: int, error_type: str) -> str:
    """An Anthropic error answer: status, JSON body, type, request id; the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == error_type, data
    assert data["request_id"] == response.headers["request-id"]
    message: str = data["error"]["message"]
    assert message and UPSTREAM_KEY not in message
    return message


def stream_error(http: httpx.Client, error_type: str) -> tuple[str, list[Event]]:
    """A stream that began (200, SSE) and ended in one `error` event of `error_type`."""
    response = http.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.content)
    name, payload = events[-1]
    assert name == "error", events
    assert payload["error"]["type"] == error_type, payload
    assert "message_stop" not in [n for n, _ in events]
    message: str = payload["error"]["message"]
    assert message and UPSTREAM_KEY not in message
    return message, events


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.start


def closed_port() -> int:
    with socket.socket() as probe:  # nobody listens on it once closed
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- connecting ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refused_port() -> int:
    return closed_port()


@pytest.fixture(scope="module")
def refused_bridge(refused_port: int) -> Iterator[Bridge]:
    bridge = start_bridge(bridge_settings(f"http://127.0.0.1:{refused_port}/v1", **FAST))
    yield bridge
    bridge.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_connection_refused(refused_bridge: Bridge, refused_port: int, stream: bool) -> None:
    port = refused_port
    with make_http(refused_bridge) as http, Timer() as timer:
        response = http.post("/v1/messages", json=body(stream=stream))

    message = assert_error(response, 500, "api_error")
    assert message.startswith(f"could not connect to upstream 127.0.0.1:{port}")
    assert timer.elapsed < SLACK


def test_dns_failure(
    make_fast_bridge: Callable[..., Bridge],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resolver says the name does not exist (as for any `.invalid` name), with no network:
    getaddrinfo is what asyncio calls for every name it resolves."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "llm.example.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    bridge = make_fast_bridge(openai_base_url="http://llm.example.invalid:8080/v1")

    with make_http(bridge) as http:
        response = http.post("/v1/messages", json=body())

    message = assert_error(response, 500, "api_error")
    # In the user's words, not a library's (`Cannot connect to host ... ssl:default [...]`).
    assert message == (
        "could not connect to upstream llm.example.invalid:8080: its host name does not resolve"
    )


@pytest.fixture(scope="module")
def unreachable() -> Iterator[int]:
    """A port whose listen queue is full: new connections get no answer to their SYN, as
    from a host that dropped off the network, but on loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    server.close()


@pytest.fixture(scope="module")
def unreachable_bridge(unreachable: int) -> Iterator[Bridge]:
    # Retries on: a connect timeout already waited the whole connect_timeout, it is not retried.
    yield from serving(
        f"http://127.0.0.1:{unreachable}/v1", **{**FAST, "retries": 2, "retry_backoff": 0.01}
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_connect_timeout(unreachable_bridge: Bridge, unreachable: int, stream: bool) -> None:
    with make_http(unreachable_bridge) as http, Timer() as timer:
        response = http.post("/v1/messages", json=body(stream=stream))

    message = assert_error(response, 504, "timeout_error")
    assert message == f"timed out connecting to upstream 127.0.0.1:{unreachable}"
    assert CONNECT_TIMEOUT <= timer.elapsed < CONNECT_TIMEOUT + SLACK


# -- waiting for the answer ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_read_timeout_before_headers(
    fast: httpx.Client, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.reply(Silence())

    with Timer() as timer:
        response = fast.post("/v1/messages", json=body(stream=stream))

    # No byte of an answer yet, even for a stream: a real status the SDK can retry.
    message = assert_error(response, 504, "timeout_error")
    assert message.startswith("timed out waiting for upstream")
    assert READ_TIMEOUT <= timer.elapsed < READ_TIMEOUT + SLACK
    assert upstream.wait_disconnect(), "the bridge left the upstream request open"


def test_stall_mid_stream_ends_with_a_timeout_event(
    fast: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.reply(SSEReply([chunk({"role": "assistant", "content": "Half"})], end="stall"))

    with Timer() as timer:
        message, events = stream_error(fast, "timeout_error")

    assert READ_TIMEOUT <= timer.elapsed < READ_TIMEOUT + SLACK
    assert "upstream" in message
    texts = [p["delta"]["text"] for n, p in events if n == "content_block_delta"]
    assert texts == ["Half"]
    assert [n for n, _ in events].count("ping") >= 2, "pings kept the client alive meanwhile"
    assert upstream.wait_disconnect()


def test_slow_drip_stream(fast: httpx.Client, upstream: FakeUpstream) -> None:
    """One byte a second never trips httpx's read timeout; no event arrives in time, though."""
    drip = [bytes([b]) for b in chunk({"role": "assistant", "content": "Hello"}).encode()]
    upstream.reply(SSEReply(drip, delay=1.0 * READ_TIMEOUT / 1.5))

    with Timer() as timer:
        message, _ = stream_error(fast, "timeout_error")

    assert READ_TIMEOUT <= timer.elapsed < READ_TIMEOUT + SLACK
    assert "sent nothing usable" in message
    assert upstream.wait_disconnect(), "the bridge went on reading the drip"


def test_slow_drip_body(fast: httpx.Client, upstream: FakeUpstream) -> None:
    text = json.dumps(completion("Hello")).encode()
    drip = [bytes([b]) for b in text]
    upstream.reply(
        SSEReply(drip, delay=READ_TIMEOUT / 1.5, headers={"content-type": "application/json"})
    )

    with Timer() as timer:
        response = fast.post("/v1/messages", json=body())

    message = assert_error(response, 504, "timeout_error")
    assert message.startswith("timed out reading the answer of upstream")
    assert READ_TIMEOUT <= timer.elapsed < READ_TIMEOUT + SLACK
    assert upstream.wait_disconnect()


def test_slow_but_steady_stream_is_fine(fast: httpx.Client, upstream: FakeUpstream) -> None:
    """A pause longer than two pings but within the idle timeout: the stream completes."""
    chunks: list[str | Pause] = list(text_stream(["a", "b", "c"]))
    chunks.insert(2, Pause(READ_TIMEOUT * 0.7))
    upstream.reply(SSEReply(chunks))

    events = parse_events(fast.post("/v1/messages", json=body(stream=True)).content)

    assert events[-1][0] == "message_stop"
    assert "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta") == "abc"


# -- HTTP errors from the upstream --------------------------------------------------------

STATUSES = [
    (400, 400, "invalid_request_error"),
    (401, 502, "api_error"),  # the proxy's own key was refused (`key_refused`)
    (403, 502, "api_error"),
    (404, 404, "not_found_error"),
    (413, 413, "request_too_large"),
    (422, 400, "invalid_request_error"),
    (429, 429, "rate_limit_error"),
    (500, 500, "api_error"),
    (502, 500, "api_error"),
    (503, 529, "overloaded_error"),
    (504, 504, "timeout_error"),
]


def openai_style(status: int) -> Reply:
    return JSONReply(
        {"error": {"message": f"failure {status}", "type": "x", "param": None, "code": None}},
        status=status,
        headers={"retry-after": "3"} if status == 429 else {},
    )


def openrouter_style(status: int) -> Reply:
    error = {
        "code": status,
        "message": f"failure {status}",
        "metadata": {"raw": "provider said no", "provider_name": "SomeProvider"},
    }
    return JSONReply(
        {"error": error, "user_id": "user_1"},
        status=status,
        headers={"retry-after": "3"} if status == 429 else {},
    )


def vllm_style(status: int) -> Reply:
    return JSONReply(
        {"object": "error", "message": f"failure {status}", "type": "Error", "code": status},
        status=status,
        headers={"retry-after": "3"} if status == 429 else {},
    )


def html_style(status: int) -> Reply:
    page = f"<html><head><title>failure {status}</title></head><body><h1>failure {status}</h1>"
    return RawReply(
        page + "<hr>nginx</body></html>",
        status=status,
        headers={"retry-after": "3"} if status == 429 else {},
    )


STYLES = {
    "openai": openai_style,
    "openrouter": openrouter_style,
    "vllm": vllm_style,
    "html": html_style,
}


def status_cases() -> Iterator[Any]:
    """Every status in every style without streaming; every status with streaming asked for,
    in turn in each style (the error comes before the stream begins: the same code path)."""
    for index, (status, anthropic_status, error_type) in enumerate(STATUSES):
        for style in STYLES:
            yield pytest.param(
                False, style, status, anthropic_status, error_type, id=f"plain-{status}-{style}"
            )
        style = list(STYLES)[index % len(STYLES)]
        yield pytest.param(
            True, style, status, anthropic_status, error_type, id=f"stream-{status}-{style}"
        )


@pytest.mark.parametrize(
    ("stream", "style", "status", "anthropic_status", "error_type"), list(status_cases())
)
def test_upstream_status(
    fast: httpx.Client,
    upstream: FakeUpstream,
    stream: bool,
    style: str,
    status: int,
    anthropic_status: int,
    error_type: str,
) -> None:
    upstream.reply(STYLES[style](status))

    response = fast.post("/v1/messages", json=body(stream=stream))

    message = assert_error(response, anthropic_status, error_type)
    assert f"failure {status}" in message and "<" not in message
    if status == 429:
        assert response.headers["retry-after"] == "3"
    # Retries are off on this bridge (`retries = 0`): a 502 or 503 is passed on at once.
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_hangup_before_answering(fast: httpx.Client, upstream: FakeUpstream, stream: bool) -> None:
    upstream.reply(Hangup())

    response = fast.post("/v1/messages", json=body(stream=stream))

    assert assert_error(response, 500, "api_error").endswith(
        "connection failed: the server closed the connection without answering"
    )


# -- 200 answers that are wrong -----------------------------------------------------------


def test_invalid_json_body(fast: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(RawReply('{"id": "chatcmpl-1", "choices": [', content_type="application/json"))

    message = assert_error(fast.post("/v1/messages", json=body()), 502, "api_error")
    assert "not JSON" in message


def test_json_instead_of_a_stream(fast: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("not streamed")))

    message, _ = stream_error(fast, "api_error")
    assert "ended before the reply was complete" in message


def test_garbage_lines_are_skipped(fast: httpx.Client, upstream: FakeUpstream) -> None:
    """Lines that are no SSE field, and data that is no JSON, are skipped as the SSE rules and
    OpenAI's SDK do (keep-alives look like that); the reply around them is intact."""
    chunks = text_stream(["Hel", "lo"])
    chunks[2:2] = ["this is no SSE line\n\n", "data: {not json\n\n", "\x00\xff garbage\n\n"]
    upstream.reply(SSEReply(chunks))

    events = parse_events(fast.post("/v1/messages", json=body(stream=True)).content)

    assert events[-1][0] == "message_stop"
    assert "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta") == "Hello"


@pytest.mark.parametrize(
    ("error_chunk", "error_type"),
    [
        pytest.param(
            {"error": {"message": "The server had an error", "type": "server_error"}},
            "api_error",
            id="openai",
        ),
        pytest.param(
            {
                "error": {"code": 502, "message": "Provider returned error"},
                "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
            },
            "api_error",
            id="openrouter",
        ),
        pytest.param(
            {"object": "error", "message": "engine died", "type": "InternalServerError"},
            "api_error",
            id="vllm",
        ),
        pytest.param(
            {"error": {"message": "Rate limit exceeded", "type": "rate_limit_error"}},
            "rate_limit_error",
            id="rate-limit",
        ),
        pytest.param(
            {"error": {"message": "Overloaded", "type": "overloaded_error"}},
            "overloaded_error",
            id="overloaded",
        ),
    ],
)
def test_error_chunk_mid_stream(
    fast: httpx.Client, upstream: FakeUpstream, error_chunk: dict[str, Any], error_type: str
) -> None:
    chunks = [
        chunk({"role": "assistant", "content": "Partial"}),
        f"data: {json.dumps(error_chunk)}\n\n",
    ]
    upstream.reply(SSEReply(chunks, end="stall"))

    message, events = stream_error(fast, error_type)

    assert [p["delta"]["text"] for n, p in events if n == "content_block_delta"] == ["Partial"]
    assert message
    # The upstream had nothing more to say; the bridge hung up instead of waiting.
    assert upstream.wait_disconnect()


def test_connection_cut_mid_stream(
    fast_bridge: Bridge, fast: httpx.Client, upstream: FakeUpstream
) -> None:
    cut = SSEReply([chunk({"role": "assistant", "content": "Half an ans"})], end="close")
    upstream.reply(cut)

    _, events = stream_error(fast, "api_error")

    assert [p["delta"]["text"] for n, p in events if n == "content_block_delta"] == ["Half an ans"]

    # The SDK raises on the event: Claude Code shows it (and may retry the turn).
    upstream.reply(cut)
    with (
        make_client(fast_bridge) as sdk,
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model=MODEL, max_tokens=50, messages=HI) as stream,  # type: ignore[arg-type]
    ):
        for _ in stream:
            pass
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# -- huge answers -------------------------------------------------------------------------


def test_huge_answer_is_relayed(fast: httpx.Client, upstream: FakeUpstream) -> None:
    text = "x" * (4 * 1024 * 1024)
    upstream.reply(JSONReply(completion(text)))
    upstream.reply(SSEReply(text_stream([text[i : i + 65536] for i in range(0, len(text), 65536)])))

    response = fast.post("/v1/messages", json=body())
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == text

    events = parse_events(fast.post("/v1/messages", json=body(stream=True)).content)
    assert events[-1][0] == "message_stop"
    assert "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta") == text


def test_too_big_answer(
    fast: httpx.Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_module, "MAX_RESPONSE_BODY", 1024 * 1024)
    upstream.reply(JSONReply(completion("x" * (2 * 1024 * 1024))))

    message = assert_error(fast.post("/v1/messages", json=body()), 502, "api_error")
    assert "more than 1048576 bytes" in message


def test_endless_event(
    fast: httpx.Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data line that never ends is not buffered without bound."""
    monkeypatch.setattr(pipeline_module, "MAX_EVENT_BYTES", 1024 * 1024)
    piece = b"y" * 65536
    upstream.reply(SSEReply([b'data: {"choices": [{"delta": {"content": "', *[piece] * 40]))

    message, _ = stream_error(fast, "api_error")
    assert "an event of more than 1048576 bytes" in message


# -- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_retry_after_gateway_error(
    retrying: httpx.Client, upstream: FakeUpstream, status: int, stream: bool
) -> None:
    reply = SSEReply(text_stream(["Hi"])) if stream else JSONReply(completion("Hi"))
    upstream.reply(JSONReply({"error": {"message": "bad gateway"}}, status=status), reply)

    response = retrying.post("/v1/messages", json=body(stream=stream))

    assert response.status_code == 200, response.text
    assert len(upstream.requests) == 2
    assert upstream.requests[0].body == upstream.requests[1].body


def test_retries_run_out(retrying: httpx.Client, upstream: FakeUpstream) -> None:
    overloaded = JSONReply({"error": {"message": "no capacity"}}, status=503)
    upstream.reply(overloaded, overloaded, overloaded, JSONReply(completion("too late")))

    with Timer() as timer:
        response = retrying.post("/v1/messages", json=body())

    assert_error(response, 529, "overloaded_error")
    assert len(upstream.requests) == 3, "one try and two retries"
    # Backoff 0.05 s then 0.1 s, each with jitter down to half.
    assert timer.elapsed >= 0.075


def test_long_retry_after_goes_to_the_client(
    retrying: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.reply(
        JSONReply({"error": {"message": "busy"}}, status=503, headers={"retry-after": "30"})
    )

    response = retrying.post("/v1/messages", json=body())

    assert_error(response, 529, "overloaded_error")
    assert response.headers["retry-after"] == "30"
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 504])
def test_no_retry_of_other_statuses(
    retrying: httpx.Client, upstream: FakeUpstream, status: int
) -> None:
    upstream.reply(openai_style(status), JSONReply(completion("should not be asked")))

    response = retrying.post("/v1/messages", json=body())

    assert response.status_code == dict((s, a) for s, a, _ in STATUSES)[status]
    assert len(upstream.requests) == 1


def test_no_retry_once_streaming(retrying: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.reply(
        SSEReply([chunk({"role": "assistant", "content": "Half"})], end="close"),
        SSEReply(text_stream(["should not be asked"])),
    )

    stream_error(retrying, "api_error")

    assert len(upstream.requests) == 1


def test_no_retry_after_a_read_timeout(retrying: httpx.Client, upstream: FakeUpstream) -> None:
    """The upstream may be working on it: sending it again could run the work twice."""
    upstream.reply(Silence(), JSONReply(completion("should not be asked")))

    assert_error(retrying.post("/v1/messages", json=body()), 504, "timeout_error")
    assert len(upstream.requests) == 1


def test_connection_refused_is_retried(
    make_fast_bridge: Callable[..., Bridge],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    bridge = make_fast_bridge(
        openai_base_url=f"http://127.0.0.1:{port}/v1", retries=2, retry_backoff=0.05
    )

    with caplog.at_level(logging.WARNING, "claude_bridge.upstream"), make_http(bridge) as http:
        response = http.post("/v1/messages", json=body())

    assert_error(response, 500, "api_error")
    retried = [r.getMessage() for r in caplog.records if r.name == "claude_bridge.upstream"]
    assert len(retried) == 2, retried
    assert "retry 1 of 2" in retried[0] and "retry 2 of 2" in retried[1]
    assert all("could not connect" in line for line in retried)
