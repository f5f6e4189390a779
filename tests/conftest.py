"""Shared fixtures: a scripted OpenAI-compatible upstream and claude-bridge, both real servers
on loopback, and the official `anthropic` SDK pointed at the bridge.

* `upstream`: the session's `FakeUpstream` (tests/upstream.py), reset before and after each
  test: script its replies with `upstream.reply(...)`, read `upstream.requests`.
* `bridge`: the session's claude-bridge (`create_app(settings)` on uvicorn) in front of it;
  `bridge.url` is the base URL clients use.
* `make_bridge(**overrides)`: another bridge with settings overrides (`ping_interval=0.2`,
  `openai_base_url=...`) and optionally its own HTTP `limits=`, stopped at the end of the test.
* `client`: `anthropic.Anthropic` for `bridge`, no retries; `http`: plain `httpx.Client` on it.
* `make_client(bridge)`, `make_async_client(bridge)`, `make_http(bridge)`: the same for any
  bridge (import them from conftest); `serving(url, **overrides)` for a module's own bridge.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
import uvicorn
from anthropic.types import ToolParam
from upstream import FakeUpstream

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.http_limits import Limits, uvicorn_options

UPSTREAM_KEY = "sk-upstream-TESTKEY-1234567890"
CLIENT_KEY = "sk-ant-client-key"
BIG_MODEL = "big-model"
SMALL_MODEL = "small-model"
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
"""A client tool for the tests that need one."""
# For Starlette's TestClient: its default `Host: testserver` gets 403 (proxy/guard.py).
IN_PROCESS_URL = "http://127.0.0.1"
# Generous bounds that only matter when something hangs: a test fails instead of blocking.
CLIENT_TIMEOUT = 20.0
START_TIMEOUT = 10.0


def bridge_settings(upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_base_url": upstream_url,
        "openai_api_key": UPSTREAM_KEY,
        "big_model": BIG_MODEL,
        "small_model": SMALL_MODEL,
        "connect_timeout": 5.0,
        "read_timeout": 30.0,
        # One scripted reply per request: tests that want upstream retries ask for them.
        "retries": 0,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Bridge:
    """claude-bridge served by uvicorn on loopback in a background thread."""

    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("the bridge's server thread did not stop")


def start_bridge(
    settings: Settings,
    app: Any = None,
    graceful: float = 2.0,
    limits: Limits | None = None,
    host: str = "127.0.0.1",
) -> Bridge:
    """`app` (default: `create_app(settings)`) on uvicorn on `host` (a loopback address, "::1"
    for IPv6) in a thread, with the HTTP limits `serve` has (`limits`, default: from
    `settings`)."""
    # Explicitly TCP: asyncio sets TCP_NODELAY only on sockets whose proto says so, as
    # `uvicorn.run(host=..., port=...)` gets them. Without it every answer waits ~40 ms on
    # Nagle and delayed ACKs.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings) if app is None else app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful,
        **uvicorn_options(settings, limits),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"bridge-{port}", daemon=True
    )
    thread.start()
    netloc = f"[{host}]" if family == socket.AF_INET6 else host
    bridge = Bridge(f"http://{netloc}:{port}", settings, server, thread, sock)
    deadline = time.monotonic() + START_TIMEOUT
    # Poll the server's own flag, then prove it answers: no fixed sleep.
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            bridge.stop()
            raise RuntimeError("the bridge did not start")
        time.sleep(0.005)
    response = httpx.get(bridge.url + "/", timeout=START_TIMEOUT, verify=False)
    if response.status_code != 200:
        bridge.stop()
        raise RuntimeError(f"the bridge's health check answered {response.status_code}")
    return bridge


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def _between_resets(server: FakeUpstream) -> Iterator[FakeUpstream]:
    server.reset()
    yield server
    # Hang up on streams a test left open, so the next test starts from silence.
    server.reset()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    yield from _between_resets(upstream_server)


@pytest.fixture(scope="session")
def second_upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def second_upstream(second_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """Another scripted upstream, for a bridge with several."""
    yield from _between_resets(second_upstream_server)


def serving(upstream_url: str, **overrides: Any) -> Iterator[Bridge]:
    """A bridge on `upstream_url` with settings `overrides`, stopped when resumed: the body of
    a module's own bridge fixture (`yield from serving(upstream_server.base_url, mode=...)`)."""
    bridge = start_bridge(bridge_settings(upstream_url, **overrides))
    yield bridge
    bridge.stop()


@pytest.fixture(scope="session")
def session_bridge(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    yield from serving(upstream_server.base_url)


@pytest.fixture
def bridge(session_bridge: Bridge, upstream: FakeUpstream) -> Bridge:
    return session_bridge


@pytest.fixture
def make_bridge(upstream: FakeUpstream) -> Iterator[Callable[..., Bridge]]:
    started: list[Bridge] = []

    def make(limits: Limits | None = None, **overrides: Any) -> Bridge:
        bridge = start_bridge(bridge_settings(upstream.base_url, **overrides), limits=limits)
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        bridge.stop()


def make_client(bridge: Bridge, **options: Any) -> anthropic.Anthropic:
    """The SDK on `bridge`, no retries. Plain HTTP on loopback: `verify=False` only skips
    loading the CA bundle, which costs ~25 ms a client."""
    values: dict[str, Any] = {
        "base_url": bridge.url,
        "api_key": CLIENT_KEY,
        "max_retries": 0,
        "timeout": CLIENT_TIMEOUT,
        "http_client": anthropic.DefaultHttpxClient(verify=False),
        **options,
    }
    return anthropic.Anthropic(**values)


def make_async_client(bridge: Bridge, **options: Any) -> anthropic.AsyncAnthropic:
    values: dict[str, Any] = {
        "base_url": bridge.url,
        "api_key": CLIENT_KEY,
        "max_retries": 0,
        "timeout": CLIENT_TIMEOUT,
        "http_client": anthropic.DefaultAsyncHttpxClient(verify=False),
        **options,
    }
    return anthropic.AsyncAnthropic(**values)


def make_http(bridge: Bridge) -> httpx.Client:
    """Plain httpx on `bridge`, with the headers the SDK would send."""
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    return httpx.Client(base_url=bridge.url, headers=headers, timeout=CLIENT_TIMEOUT, verify=False)


@pytest.fixture
def client(bridge: Bridge) -> Iterator[anthropic.Anthropic]:
    with make_client(bridge) as sdk:
        yield sdk


@pytest.fixture
def http(bridge: Bridge) -> Iterator[httpx.Client]:
    with make_http(bridge) as plain:
        yield plain
