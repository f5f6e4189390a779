"""A client that leaves is forgotten at once, whatever the request was waiting for: the upstream
sees its connection closed, or never hears of the request; and a full pool answers 529 in time.

Real servers on loopback: the bridge on uvicorn, the scripted upstream of tests/upstream.py,
whose `Silence` and stalled replies wait until their client hangs up and then record it. The
clients that leave are raw sockets that send a request and close without reading the answer.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
from conftest import CLIENT_KEY, Bridge, bridge_settings, make_client, start_bridge
from upstream import FakeUpstream, JSONReply, Reply, Silence, SSEReply, completion

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.events import Bus, Exchange

MODEL = "claude-sonnet-4-6"
# A client that left is forgotten within this long (the bridges here would otherwise wait
# 30 s for their upstream).
GONE = 1.0
QUEUED = 10


def body(stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hi"}],
    }


class Caller:
    """A client that sends one request on its own connection, then leaves unanswered."""

    def __init__(self, bridge: Bridge, stream: bool = False) -> None:
        port = int(bridge.url.rsplit(":", 1)[1])
        payload = json.dumps(body(stream)).encode()
        head = (
            f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\nx-api-key: {CLIENT_KEY}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-length: {len(payload)}\r\n\r\n"
        )
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(head.encode() + payload)

    def leave(self) -> None:
        self.sock.close()


class Ends:
    """Counts the bridge's exchanges as they are routed and as they end (with which status)."""

    def __init__(self) -> None:
        self.routed = 0
        self.statuses: list[int | None] = []
        self._changed = threading.Condition()

    def __call__(self, kind: str, exchange: Exchange) -> None:
        with self._changed:
            if kind == "routed":
                self.routed += 1
            elif kind == "finish":
                self.statuses.append(exchange.status)
            self._changed.notify_all()

    def wait(self, *, routed: int = 0, finished: int = 0) -> None:
        with self._changed:
            done = self._changed.wait_for(
                lambda: self.routed >= routed and len(self.statuses) >= finished, GONE
            )
            assert done, f"{self.routed} routed, ended {self.statuses}"


@pytest.fixture
def one_connection(upstream: FakeUpstream) -> Iterator[tuple[Bridge, Ends]]:
    """A bridge whose pool holds one upstream connection, pool timeout as configured, and the
    ends of its exchanges."""
    settings = bridge_settings(upstream.base_url, max_connections=1)
    ends = Ends()
    bus = Bus()
    bus.subscribe(ends)
    bridge = start_bridge(settings, create_app(settings, bus=bus))
    yield bridge, ends
    bridge.stop()


json_stall = SSEReply(['{"id": "chatcmpl-1", "choices": '], end="stall")


@pytest.mark.parametrize(
    ("stream", "reply"),
    [(False, Silence()), (False, json_stall), (True, Silence())],
    ids=["json-before-headers", "json-mid-body", "stream-before-headers"],
)
def test_leaving_closes_the_upstream_request(
    bridge: Bridge, upstream: FakeUpstream, stream: bool, reply: Reply
) -> None:
    upstream.reply(reply)
    caller = Caller(bridge, stream)
    upstream.wait_for_requests(1)
    assert not upstream.disconnected.is_set()  # the upstream is still working on it

    caller.leave()

    assert upstream.last.disconnected.wait(GONE), "the upstream worked on for nobody"


def test_requests_queued_for_a_connection_leave_the_queue(
    one_connection: tuple[Bridge, Ends], upstream: FakeUpstream
) -> None:
    bridge, ends = one_connection
    upstream.reply(Silence())
    upstream.always(JSONReply(completion("served")))
    busy = Caller(bridge)
    upstream.wait_for_requests(1)
    queued = [Caller(bridge, stream=n % 2 == 1) for n in range(QUEUED)]
    ends.wait(routed=1 + QUEUED)  # all waiting for the one connection

    for caller in queued:
        caller.leave()
    ends.wait(finished=QUEUED)
    busy.leave()
    ends.wait(finished=QUEUED + 1)

    assert ends.statuses == [499] * (QUEUED + 1)
    with make_client(bridge) as client:
        message = client.messages.create(**body(stream=False))
    assert message.content[0].type == "text" and message.content[0].text == "served"
    assert len(upstream.requests) == 2, "requests of clients that left were sent upstream"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_pool_timeout_is_529_overloaded(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream, stream: bool
) -> None:
    bridge = make_bridge(max_connections=1, pool_timeout=0.01)
    upstream.reply(Silence())
    busy = Caller(bridge)
    upstream.wait_for_requests(1)
    try:
        with make_client(bridge) as client, pytest.raises(anthropic.OverloadedError) as caught:
            client.messages.create(**body(stream))  # a stream fails before its first event
    finally:
        busy.leave()

    error = caught.value
    assert error.status_code == 529
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "overloaded_error"
    assert "busy" in error.body["error"]["message"]
    assert float(error.response.headers["retry-after"]) > 0
    assert len(upstream.requests) == 1
