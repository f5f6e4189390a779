"""A web page must not be able to spend the user's key (proxy/guard.py).

Requests are written byte by byte on a socket to a real claude-bridge on loopback, as a browser
would send them: whatever `Host`, `Origin` and `Content-Type` the test names, nothing added. The
scripted upstream proves what got through: a refused request never reaches it. A real browser
doing the same is tests/realstack/test_browser.py.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import (
    CLIENT_TIMEOUT,
    IN_PROCESS_URL,
    Bridge,
    bridge_settings,
    start_bridge,
)
from starlette.testclient import TestClient
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.proxy import __version__, guard
from claude_bridge.proxy.app import create_app

REQUEST = json.dumps(
    {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
).encode()
ENDPOINTS = ("/v1/messages", "/v1/messages/count_tokens")
TOKEN = "bridge-token-0123456789"
ALLOWED_ORIGIN = "http://app.example"
# The bodies a page can make a browser send with no CORS preflight (the fetch spec's
# CORS-safelisted request content types), and no declared type at all.
BROWSER_SIMPLE_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----WebKitFormBoundaryx1",
    None,
]
REBINDING_HOST = "evil.example:8082"
DEFAULT = "the bridge's own address"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_type(self) -> str:
        body = self.json()
        assert body["type"] == "error" and body["error"]["message"], body
        assert body["request_id"] == self.headers["request-id"], body
        error_type: str = body["error"]["type"]
        return error_type


def raw(
    bridge: Bridge,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    host: str | None = DEFAULT,
    version: str = "HTTP/1.1",
    length: int | None = None,
) -> Answer:
    """One request exactly as written (`host=None`: no Host header; `length`: a declared
    Content-Length other than the body's), on its own connection."""
    target = urlsplit(bridge.url)
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {target.netloc if host == DEFAULT else host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body or length is not None or method == "POST":
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    assert target.hostname is not None and target.port is not None
    with socket.create_connection((target.hostname, target.port), CLIENT_TIMEOUT) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        answer = Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
        response.close()
    return answer


def post(bridge: Bridge, path: str, content_type: str | None, **options: Any) -> Answer:
    headers = list(options.pop("headers", ()))
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return raw(bridge, "POST", path, headers, REQUEST, **options)


@pytest.fixture(scope="module")
def guarded(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    """A bridge configured for one trusted web app and a LAN name, "bound" to 192.0.2.7 (it
    listens on loopback, but its guard takes that address as the one `serve` binds)."""
    settings = bridge_settings(
        upstream_server.base_url,
        host="192.0.2.7",
        allowed_hosts=["proxy.lan", "Tools.Example:9999"],
        allowed_origins=[ALLOWED_ORIGIN, "https://tool.example/"],
    )
    bridge = start_bridge(settings)
    yield bridge
    bridge.stop()


# -- Content-Type -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content_type", BROWSER_SIMPLE_TYPES)
def test_a_body_a_browser_sends_without_preflight_is_refused(
    bridge: Bridge, upstream: FakeUpstream, path: str, content_type: str | None
) -> None:
    answer = post(bridge, path, content_type)

    assert answer.status == 400, answer.body
    assert answer.error_type() == "invalid_request_error"
    assert "application/json" in answer.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_bodies_are_served(bridge: Bridge, upstream: FakeUpstream, content_type: str) -> None:
    upstream.reply(JSONReply(completion("ok")))

    answer = post(bridge, "/v1/messages", content_type)

    assert answer.status == 200, answer.body
    assert answer.json()["content"] == [{"type": "text", "text": "ok"}]
    assert len(upstream.requests) == 1


# -- Host -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/messages"), ("POST", ENDPOINTS[1]), ("GET", "/")]
)
def test_a_rebinding_host_is_refused(
    bridge: Bridge, upstream: FakeUpstream, method: str, path: str
) -> None:
    headers = [("Content-Type", "application/json")]
    answer = raw(
        bridge, method, path, headers, REQUEST if method == "POST" else b"", host=REBINDING_HOST
    )

    assert answer.status == 403, answer.body
    assert answer.error_type() == "permission_error"
    assert REBINDING_HOST in answer.json()["error"]["message"]
    assert "access-control-allow-origin" not in answer.headers
    assert upstream.requests == []


def test_the_host_is_checked_before_the_token_and_the_body(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    locked = make_bridge(auth_token=TOKEN)
    # 10 MB declared and never sent: an answer at all shows nothing waited for the body.
    answer = raw(
        locked,
        "POST",
        "/v1/messages",
        [("Content-Type", "application/json"), ("x-api-key", "wrong")],
        host=REBINDING_HOST,
        length=10_000_000,
    )
    assert answer.status == 403 and answer.error_type() == "permission_error"
    assert upstream.requests == []


LOOPBACK_HOSTS = [
    DEFAULT,
    "localhost",
    "LocalHost:1",
    "localhost.:8082",
    "claude.localhost:8082",
    "127.0.0.2:9",
    "127.255.255.254",
    "[::1]:8082",
    "[::1]",
]
FOREIGN_HOSTS = [
    "evil.example",
    "127.0.0.1.evil.example:8082",
    "localhost.evil.example",
    "evil.localhost.example",
    "localhost:evil",
    "[::2]:8082",
    "[::1",
    "[::1]evil.example",
    "10.0.0.1:8082",
    "0.0.0.0:8082",
    "",
]


@pytest.mark.parametrize(
    ("host", "served"), [(h, True) for h in LOOPBACK_HOSTS] + [(h, False) for h in FOREIGN_HOSTS]
)
def test_loopback_hosts_on_any_port_and_no_other(bridge: Bridge, host: str, served: bool) -> None:
    answer = raw(bridge, "GET", "/", host=host)
    if served:
        assert answer.status == 200, answer.body
    else:
        assert answer.status == 403 and answer.error_type() == "permission_error"


def test_a_request_without_host_is_refused(bridge: Bridge) -> None:
    answer = raw(bridge, "GET", "/", host=None, version="HTTP/1.0")
    assert answer.status == 403 and answer.error_type() == "permission_error"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("192.0.2.7:8082", 200),  # the address `serve` binds
        ("proxy.lan:8082", 200),
        ("PROXY.LAN", 200),
        ("tools.example:1", 200),  # a port in the setting is not part of the name
        ("192.0.2.8:8082", 403),
        ("other.lan", 403),
    ],
)
def test_allowed_hosts_and_the_bound_address(guarded: Bridge, host: str, status: int) -> None:
    assert raw(guarded, "GET", "/", host=host).status == status


def test_a_wildcard_bind_adds_no_name(make_bridge: Callable[..., Bridge]) -> None:
    everywhere = make_bridge(host="0.0.0.0")
    assert raw(everywhere, "GET", "/", host="0.0.0.0:8082").status == 403
    assert raw(everywhere, "GET", "/", host="192.0.2.7:8082").status == 403


def test_ipv6_loopback(upstream_server: FakeUpstream, upstream: FakeUpstream) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    bridge = start_bridge(bridge_settings(upstream_server.base_url), host="::1")
    upstream.reply(JSONReply(completion("over v6")))
    try:
        assert bridge.url.startswith("http://[::1]:")
        served = post(bridge, "/v1/messages", "application/json")
        refused = post(bridge, "/v1/messages", "application/json", host=REBINDING_HOST)
    finally:
        bridge.stop()
    assert served.status == 200 and served.json()["content"][0]["text"] == "over v6"
    assert refused.status == 403
    assert len(upstream.requests) == 1


def test_the_app_checks_the_host_without_its_lifespan_running() -> None:
    app = create_app(bridge_settings("http://127.0.0.1:9/v1"))
    # Not entered as a context manager: the app's lifespan never runs.
    assert TestClient(app).get("/").status_code == 403  # Host: testserver
    assert TestClient(app, base_url=IN_PROCESS_URL).get("/").status_code == 200


# -- Origin and CORS --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",  # sandboxed frames, file: pages
        "https://app.example",  # another scheme is another origin
        "http://app.example:8080",
        "http://app.example.evil.example",
    ],
)
def test_a_foreign_origin_is_refused(guarded: Bridge, upstream: FakeUpstream, origin: str) -> None:
    answer = post(guarded, "/v1/messages", "application/json", headers=[("Origin", origin)])

    assert answer.status == 403, answer.body
    assert answer.error_type() == "permission_error"
    assert "access-control-allow-origin" not in answer.headers
    assert upstream.requests == []


def test_each_refusal_is_logged_once(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A page probing the proxy shows in its log, once for each thing it tries: the same
    refusal again (another path, the same origin) adds nothing, so a page sending thousands
    fills no log."""
    bridge = make_bridge()
    probes = [
        ("/v1/messages", "application/json", [("Origin", "http://evil.example")]),
        ("/v1/messages/count_tokens", "application/json", [("Origin", "http://evil.example")]),
        ("/v1/messages", "application/json", [("Origin", "http://other.example")]),
        ("/v1/messages%1B%5B2J", "text/plain", []),  # ESC [ 2 J once decoded
        ("/v1/messages", "text/plain", []),
    ]
    with caplog.at_level(logging.WARNING, logger="claude_bridge.guard"):
        for path, content_type, headers in probes:
            assert post(bridge, path, content_type, headers=headers).status in (400, 403)
        post(bridge, "/v1/messages", "application/json", host=REBINDING_HOST)

    told = [r.getMessage() for r in caplog.records if r.name == "claude_bridge.guard"]
    assert len(told) == 4, told
    assert "'http://evil.example' is not allowed" in told[0] and "403" in told[0]
    assert "'http://other.example' is not allowed" in told[1]
    assert "'text/plain'" in told[2] and "400" in told[2]
    assert "\x1b" not in told[2] and "'/v1/messages\\x1b[2J'" in told[2]  # written out
    assert REBINDING_HOST in told[3]
    assert upstream.requests == []


def test_the_refusals_logged_are_bounded(
    make_bridge: Callable[..., Bridge],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page that varies what it sends (a new origin each time) is told about up to a bound,
    then the log stays quiet; the refusals go on."""
    monkeypatch.setattr(guard, "_TOLD", 2)
    bridge = make_bridge()
    with caplog.at_level(logging.WARNING, logger="claude_bridge.guard"):
        for n in range(4):
            origin = [("Origin", f"http://evil{n}.example")]
            assert post(bridge, "/v1/messages", "application/json", headers=origin).status == 403

    told = [r.getMessage() for r in caplog.records if r.name == "claude_bridge.guard"]
    assert len(told) == 2, told
    assert "evil0" in told[0] and "evil1" in told[1]


@pytest.mark.parametrize("origin", ["http://127.0.0.1:3000", "http://localhost:5173"])
def test_by_default_no_page_is_allowed_not_even_a_local_one(
    bridge: Bridge, upstream: FakeUpstream, origin: str
) -> None:
    for path in ENDPOINTS:
        answer = post(bridge, path, "text/plain", headers=[("Origin", origin)])
        assert answer.status == 403 and answer.error_type() == "permission_error"
    assert raw(bridge, "GET", "/", [("Origin", origin)]).status == 403
    assert upstream.requests == []


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "https://tool.example"])
def test_an_allowed_origin_is_served_and_may_read_the_answer(
    guarded: Bridge, upstream: FakeUpstream, origin: str
) -> None:
    upstream.reply(JSONReply(completion("hello page")))

    answer = post(guarded, "/v1/messages", "application/json", headers=[("Origin", origin)])

    assert answer.status == 200, answer.body
    assert answer.headers["access-control-allow-origin"] == origin
    assert "request-id" in answer.headers["access-control-expose-headers"]
    assert answer.headers["vary"] == "origin"
    assert len(upstream.requests) == 1


def test_an_allowed_origin_still_must_send_json(guarded: Bridge, upstream: FakeUpstream) -> None:
    answer = post(guarded, "/v1/messages", "text/plain", headers=[("Origin", ALLOWED_ORIGIN)])

    assert answer.status == 400 and answer.error_type() == "invalid_request_error"
    # The page may read why.
    assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert upstream.requests == []


def preflight(bridge: Bridge, origin: str, **options: Any) -> Answer:
    # What Chrome sends before the anthropic JS SDK's POST (`dangerouslyAllowBrowser`).
    asked = (
        "anthropic-beta,anthropic-dangerous-direct-browser-access,anthropic-version,"
        "content-type,x-api-key,x-stainless-arch,x-stainless-lang,x-stainless-os,"
        "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
        "x-stainless-runtime-version,x-stainless-timeout,x-sdk-of-tomorrow,not a name"
    )
    headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", asked),
        ("Access-Control-Request-Private-Network", "true"),
    ]
    return raw(bridge, "OPTIONS", "/v1/messages", headers, **options)


def test_a_preflight_from_an_allowed_origin_is_answered(guarded: Bridge) -> None:
    answer = preflight(guarded, ALLOWED_ORIGIN)

    assert answer.status == 204, answer.body
    assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in answer.headers["access-control-allow-headers"].split(",")}
    sdk = {"x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type"}
    assert sdk | {"anthropic-dangerous-direct-browser-access", "x-sdk-of-tomorrow"} <= allowed
    assert "not a name" not in allowed
    assert answer.headers["access-control-allow-private-network"] == "true"
    assert int(answer.headers["access-control-max-age"]) > 0


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example", DEFAULT),
        ("http://127.0.0.1:3000", DEFAULT),
        (ALLOWED_ORIGIN, REBINDING_HOST),
    ],
)
def test_other_preflights_are_refused(guarded: Bridge, origin: str, host: str) -> None:
    answer = preflight(guarded, origin, host=host)

    assert answer.status == 403 and answer.error_type() == "permission_error"
    assert not any(name.startswith("access-control-") for name in answer.headers)


# -- GET / --------------------------------------------------------------------------------------


PUBLIC_HEALTH = {"status": "ok", "version": __version__}
# `config`: a one-way digest of the settings (`Settings.fingerprint`), for `claude-bridge code`.
FINGERPRINT = "config"


def test_health_says_status_and_version_only(bridge: Bridge) -> None:
    # No auth token set: nobody holds it, so nobody is told where requests go.
    for headers in ([], [("x-api-key", "anything")]):
        health = raw(bridge, "GET", "/", headers).json()
        assert {k: v for k, v in health.items() if k != FINGERPRINT} == PUBLIC_HEALTH


def test_health_names_the_upstream_to_token_holders_only(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    locked = make_bridge(auth_token=TOKEN)
    for headers in ([], [("x-api-key", "wrong")], [("Authorization", "Bearer wrong")]):
        answer = raw(locked, "GET", "/", headers)
        assert answer.status == 200 and answer.json() == PUBLIC_HEALTH
    for headers in ([("x-api-key", TOKEN)], [("Authorization", f"Bearer {TOKEN}")]):
        detail = raw(locked, "GET", "/", headers).json()
        detail.pop(FINGERPRINT, None)
        assert detail == {**PUBLIC_HEALTH, "upstream": f"127.0.0.1:{upstream.port}"}
