"""HTTP-layer limits (proxy/http_limits.py) on a real server, driven over raw sockets.

Header size, the time a client may take over a request's head and body, and the cap on open
connections: each answered with an Anthropic error and a closed connection. Timeouts are
shortened per test (`Limits`) and awaited as the socket's end of file, never slept on. Streams
in flight and idle keep-alive connections must outlive them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import pytest
from conftest import CLIENT_TIMEOUT, Bridge, make_client
from upstream import FakeUpstream, Pause, SSEReply, text_stream
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from claude_bridge.proxy import http_limits
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core.checker import check_wire
from claude_bridge.proxy.http_limits import HEAD_BYTES, Limits

MANY = 10_000
"""Connections or seconds that no test reaches: the limits a test does not look at."""
SHORT = 0.2
"""A timeout under test, in seconds: waited for as the socket's end of file."""
OUTLIVED = 0.3
"""Timeouts a stream and an idle connection must outlive (longer: they also time the requests
that start them, which a loaded machine must not be refused)."""
USER_HI = [{"role": "user", "content": "hi"}]


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def error(self) -> tuple[str, str]:
        data = json.loads(self.body)
        assert data["type"] == "error", data
        return data["error"]["type"], data["error"]["message"]


def connect(bridge: Bridge) -> socket.socket:
    port = int(bridge.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write sent as it is
    return sock


def head(bridge: Bridge, method: str = "GET", path: str = "/", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {bridge.url.removeprefix('http://')}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def until_eof(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def parse(data: bytes) -> list[Answer]:
    """Responses with a `content-length`, one after another; an incomplete last one left out."""
    answers = []
    while b"\r\n\r\n" in data:
        top, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = top.decode("latin-1").split("\r\n")
        names = [line.split(":", 1) for line in lines]
        headers = {name.strip().lower(): value.strip() for name, value in names}
        size = int(headers["content-length"])
        if len(rest) < size:
            break
        answers.append(Answer(int(status_line.split()[1]), headers, rest[:size]))
        data = rest[size:]
    return answers


def answered(sock: socket.socket) -> Answer:
    """The next answer, the connection left open."""
    data = bytearray()
    while not parse(bytes(data)):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    [answer] = parse(bytes(data))
    return answer


def closed_with(sock: socket.socket) -> Answer:
    """The one answer before the server closed the connection."""
    [answer] = parse(until_eof(sock))
    assert answer.headers["connection"] == "close"
    return answer


@pytest.fixture
def limited(make_bridge: Callable[..., Bridge]) -> Callable[..., Bridge]:
    """A bridge whose limits are the defaults but for those given."""

    def make(settings: dict[str, Any] | None = None, **limits: Any) -> Bridge:
        return make_bridge(Limits(**{"max_connections": MANY, **limits}), **(settings or {}))

    return make


# -- uvicorn's internals ---------------------------------------------------------------------


def test_the_uvicorn_internals_it_builds_on_are_still_there() -> None:
    """The protocol overrides these methods and reads these attributes of uvicorn's own: if a
    uvicorn release moves them, this fails first (the behaviour tests below fail next)."""
    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "send_400_response",
        "shutdown",
        "on_message_begin",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
    ):
        assert name in vars(HttpToolsProtocol), name

    async def build() -> HttpToolsProtocol:
        config = Config(app=lambda scope, receive, send: None, log_config=None)
        return HttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())

    protocol = asyncio.run(build())
    for attribute in ("connections", "server_state", "transport", "flow", "cycle", "loop"):
        assert hasattr(protocol, attribute), attribute
    assert {408, 431, 503} <= STATUS_LINE.keys()


def test_the_connection_cap_leaves_the_open_file_limit_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resource = http_limits.resource
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert http_limits.default_max_connections(100) == 1024 - 64 - 100
    assert Limits.of(Settings(max_connections=100)).max_connections == 860
    assert Limits.of(Settings(max_client_connections=5)).max_connections == 5
    monkeypatch.setattr(resource, "getrlimit", lambda _: (100, 4096))
    assert http_limits.default_max_connections(100) == http_limits.MIN_CONNECTIONS
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert http_limits.default_max_connections(100) == http_limits.UNBOUNDED_CONNECTIONS


# -- header size -----------------------------------------------------------------------------


def test_headers_over_the_limit_get_431_without_waiting_for_their_end(bridge: Bridge) -> None:
    """An unfinished head one byte over the limit is answered: the server neither waits for
    its end nor keeps what it was sent (found: 16 MB accepted, 32 MB heads held open)."""
    with connect(bridge) as sock:
        start = head(bridge).removesuffix(b"\r\n")
        sock.sendall(start + b"x-pad: " + b"a" * (HEAD_BYTES + 1 - len(start) - 7))
        answer = closed_with(sock)
    assert answer.status == 431
    assert answer.error == ("invalid_request_error", f"request headers exceed {HEAD_BYTES} bytes")


def test_a_head_sent_in_pieces_is_counted_whole(limited: Callable[..., Bridge]) -> None:
    """A slow drip of header lines, each read small, is cut at the limit all the same."""
    bridge = limited(head_bytes=4096)
    with connect(bridge) as sock:
        sock.sendall(head(bridge).removesuffix(b"\r\n"))
        for _ in range(4096 // 64):
            sock.sendall(b"x-drip: " + b"d" * 54 + b"\r\n")
        assert closed_with(sock).status == 431


def test_heads_under_the_limit_bodies_and_pipelined_requests_are_served(bridge: Bridge) -> None:
    """Only the head counts: a big head, a body far over the head limit sent with its head in
    one write, and two pipelined requests whose heads together pass the limit, all served."""
    pad = "p" * (HEAD_BYTES * 3 // 5)
    body = json.dumps({"model": "claude-3-haiku", "messages": [{"role": "user", "content": pad}]})
    count = head(
        bridge,
        "POST",
        "/v1/messages/count_tokens",
        content_type="application/json",
        content_length=str(len(body)),
    )
    with connect(bridge) as sock:
        sock.sendall(head(bridge, x_pad=pad) + head(bridge, x_pad=pad))
        sock.sendall(count + body.encode() + head(bridge, connection="close"))
        answers = parse(until_eof(sock))
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert json.loads(answers[2].body)["input_tokens"] > 0


def test_a_malformed_request_gets_an_anthropic_400(bridge: Bridge) -> None:
    with connect(bridge) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = closed_with(sock)
    assert answer.status == 400
    assert answer.error[0] == "invalid_request_error"


# -- time to send a request ------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(limited: Callable[..., Bridge]) -> None:
    with connect(limited(head_timeout=SHORT)) as sock:
        assert until_eof(sock) == b""  # no request, no answer: only the close


def test_unfinished_headers_get_408_and_the_close(limited: Callable[..., Bridge]) -> None:
    bridge = limited(head_timeout=SHORT)
    with connect(bridge) as sock:
        sock.sendall(head(bridge).removesuffix(b"\r\n"))  # never the blank line
        answer = closed_with(sock)
    assert answer.status == 408
    assert answer.error == ("timeout_error", f"request headers not received within {SHORT:g} s")


@pytest.mark.parametrize(
    "limits",
    [{"body_idle_timeout": SHORT}, {"body_timeout": SHORT}],
    ids=["idle", "in-all"],
)
def test_a_body_that_stops_half_way_gets_408_and_the_close(
    limited: Callable[..., Bridge], upstream: FakeUpstream, limits: dict[str, float]
) -> None:
    bridge = limited(**limits)
    with connect(bridge) as sock:
        sock.sendall(head(bridge, "POST", "/v1/messages", content_type="application/json",
                          content_length="1000") + b'{"model": ')  # fmt: skip
        answer = closed_with(sock)
    assert answer.status == 408
    assert answer.error[0] == "timeout_error"
    assert "request body not received in time" in answer.error[1]
    assert upstream.requests == []


# -- streams and keep-alive outlive the timeouts ---------------------------------------------


def test_a_long_stream_and_idle_keep_alive_outlive_the_timeouts(
    limited: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    """Claude Code's pattern: a stream with pings lasting longer than every timeout, a pause
    longer than the head timeout, then the follow-up request on the same connection."""
    # Every timeout short, and pings every 50 ms of upstream silence.
    short = {"head_timeout": OUTLIVED, "body_idle_timeout": OUTLIVED, "body_timeout": OUTLIVED}
    bridge = limited({"ping_interval": 0.05}, **short)
    upstream.reply(
        SSEReply([*text_stream(["Hel"])[:2], Pause(OUTLIVED * 3), *text_stream(["lo"])[1:]]),
        SSEReply(text_stream(["again"])),
    )
    request = {"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": True}
    conn = http.client.HTTPConnection(bridge.url.removeprefix("http://"), timeout=CLIENT_TIMEOUT)
    try:
        first = post(conn, {**request, "messages": USER_HI})
        assert "event: ping" in first and "event: message_stop" in first, first
        assert check_wire(first.encode()) == []
        sock = conn.sock
        # Idle for longer than the head timeout: the connection stays open (no EOF readable).
        assert select.select([sock], [], [], OUTLIVED * 3) == ([], [], [])
        follow_up = [
            *USER_HI,
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "again"},
        ]
        second = post(conn, {**request, "messages": follow_up})
        assert "again" in second
        assert conn.sock is sock  # the same connection
    finally:
        conn.close()


def post(conn: http.client.HTTPConnection, body: dict[str, Any]) -> str:
    conn.request("POST", "/v1/messages", json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    return response.read().decode()


# -- the connection cap ----------------------------------------------------------------------


def test_past_the_connection_cap_503_overloaded_then_served_once_others_close(
    limited: Callable[..., Bridge],
) -> None:
    bridge = limited(max_connections=2)
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(bridge)) for _ in range(2)]
        for sock in held:  # both accepted and served, kept alive
            sock.sendall(head(bridge))
            assert answered(sock).status == 200
        with connect(bridge) as extra:
            extra.sendall(head(bridge))
            answer = closed_with(extra)
        assert answer.status == 503
        assert answer.error[0] == "overloaded_error"
        assert answer.headers["retry-after"] == "1"
        # The SDK reads the same answer (and would retry it after `retry-after`).
        with make_client(bridge) as sdk, pytest.raises(anthropic.APIStatusError) as refused:
            sdk.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=USER_HI)
        assert refused.value.status_code == 503
        assert refused.value.body["error"]["type"] == "overloaded_error"
        # One held connection ends (the server closes it after answering): the next is served.
        held[0].sendall(head(bridge, connection="close"))
        assert closed_with(held[0]).status == 200
        with connect(bridge) as after:
            after.sendall(head(bridge, connection="close"))
            assert closed_with(after).status == 200
