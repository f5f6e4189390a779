"""A real browser: a page from another loopback origin tries to spend the key through claude-bridge.

Headless Chromium (Debian's `chromium`; .ci/run installs it) loads a page served by this test on
`http://127.0.0.1:PAGE` whose script `fetch`es the bridge on `http://127.0.0.1:BRIDGE`, another
origin: the bodies a browser sends with no preflight (text/plain, form, multipart) in `no-cors`
and `cors` modes, a JSON POST with the anthropic JS SDK's headers (which needs a preflight), and
`GET /`. The page posts what it could see back to its own server. The upstream must never be
called and the page must read nothing.

A second page, from an origin the bridge allows (`http://localhost:PAGE`), makes the same SDK
call and reads the answer: the control that shows the browser, the page and the CORS headers
work, so the refusals above are the guard's doing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Bridge, bridge_settings, start_bridge
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.proxy.app import create_app

from .support import LOOPBACK, tail

pytestmark = pytest.mark.realstack

# Bounds that only matter when something hangs: the test fails instead of blocking.
PAGE_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

# Each attempt: a name, the bridge path, and fetch()'s options (as JavaScript).
SDK_CALL = """{method: "POST", mode: "cors", body: REQUEST, headers: {
  "content-type": "application/json", "x-api-key": "sk-page", "anthropic-version": "2023-06-01",
  "anthropic-dangerous-direct-browser-access": "true", "x-stainless-lang": "js"}}"""
ATTACKS = {
    "text/plain, no-cors": ("/v1/messages", '{method: "POST", mode: "no-cors", body: REQUEST}'),
    "text/plain, cors": ("/v1/messages", '{method: "POST", mode: "cors", body: REQUEST}'),
    "form, no-cors": (
        "/v1/messages",
        '{method: "POST", mode: "no-cors", body: new URLSearchParams({json: REQUEST})}',
    ),
    "multipart, no-cors": ("/v1/messages", '{method: "POST", mode: "no-cors", body: form()}'),
    "count_tokens text/plain, no-cors": (
        "/v1/messages/count_tokens",
        '{method: "POST", mode: "no-cors", body: REQUEST}',
    ),
    "JSON with the SDK's headers (preflight)": ("/v1/messages", SDK_CALL),
    "GET /, cors": ("/", '{mode: "cors"}'),
    "GET /, no-cors": ("/", '{mode: "no-cors"}'),
}
FRIENDLY = {
    "JSON with the SDK's headers": ("/v1/messages", SDK_CALL),
    "text/plain, cors": ("/v1/messages", '{method: "POST", mode: "cors", body: REQUEST}'),
}

PAGE = """<!doctype html><title>a page</title><script>
const BRIDGE = %(bridge)s;
const REQUEST = JSON.stringify(
  {model: "claude-sonnet-4-6", max_tokens: 5, messages: [{role: "user", content: "Hi"}]});
function form() { const f = new FormData(); f.append("json", REQUEST); return f; }
async function attempt(name, path, options) {
  try {
    const response = await fetch(BRIDGE + path, options);
    let body;
    try { body = await response.text(); } catch (e) { body = "unreadable: " + e; }
    return {name, outcome: "answer", type: response.type, status: response.status, body};
  } catch (e) {
    return {name, outcome: "refused", error: String(e)};
  }
}
(async () => {
  const results = [];
  %(attempts)s
  const report = JSON.stringify({origin: location.origin, results});
  await fetch("/report", {method: "POST", body: report});
})();
</script>"""


def page(bridge_url: str, attempts: dict[str, tuple[str, str]]) -> bytes:
    calls = "\n  ".join(
        f"results.push(await attempt({json.dumps(name)}, {json.dumps(path)}, {options}));"
        for name, (path, options) in attempts.items()
    )
    return (PAGE % {"bridge": json.dumps(bridge_url), "attempts": calls}).encode()


class PageServer:
    """Serves the pages on loopback and takes each page's report of what it saw."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.reports: list[dict[str, Any]] = []
        self.reported = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                server.reports.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()
                server.reported.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Seen:
    """ASGI middleware outside the bridge's own: what reached it, and the status it answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.requests.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, noting)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("real-stack tier: Chromium is missing (Debian package `chromium`)")
    return found


@pytest.fixture
def browse(chromium: str, tmp_path: Path) -> Callable[[PageServer, str], dict[str, Any]]:
    """Open a URL in a fresh headless Chromium; its page's report, once it has posted it."""

    def run(server: PageServer, url: str) -> dict[str, Any]:
        log = tmp_path / "chromium.log"
        profile = tmp_path / f"profile-{len(server.reports)}"
        server.reported.clear()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: its helper processes end with it
            )
        try:
            reported = server.reported.wait(PAGE_TIMEOUT)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        assert reported, f"the page never reported\n--- chromium ---\n{tail(log)}"
        return server.reports[-1]

    return run


@pytest.fixture
def seen_bridge(upstream: FakeUpstream) -> Iterator[tuple[Bridge, Seen, PageServer]]:
    pages: dict[str, bytes] = {}
    server = PageServer(pages)
    settings = bridge_settings(
        upstream.base_url, allowed_origins=[f"http://localhost:{server.port}"]
    )
    seen = Seen(create_app(settings))
    bridge = start_bridge(settings, app=seen)
    pages["/attack.html"] = page(bridge.url, ATTACKS)
    pages["/friend.html"] = page(bridge.url, FRIENDLY)
    seen.requests.clear()  # start_bridge's own health check
    try:
        yield bridge, seen, server
    finally:
        bridge.stop()
        server.close()


def test_a_page_from_another_origin_cannot_spend_the_key(
    seen_bridge: tuple[Bridge, Seen, PageServer],
    upstream: FakeUpstream,
    browse: Callable[[PageServer, str], dict[str, Any]],
) -> None:
    bridge, seen, server = seen_bridge
    report = browse(server, f"http://{LOOPBACK}:{server.port}/attack.html")

    assert report["origin"] == f"http://{LOOPBACK}:{server.port}" != bridge.url
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == set(ATTACKS), report
    for name, result in results.items():
        # Refused outright, or an opaque answer the page cannot look into.
        readable = result["outcome"] == "answer" and result["type"] != "opaque"
        assert not readable and not result.get("body"), (name, result)
    assert upstream.requests == []
    # The browser did send them: the bridge refused every POST, and the SDK call never got
    # past its preflight.
    posts = [r for r in seen.requests if r[0] == "POST"]
    assert len(posts) == 5 and {status for _, _, status in posts} == {403}, seen.requests
    assert ("OPTIONS", "/v1/messages", 403) in seen.requests
    assert ("GET", "/", 403) in seen.requests  # cors mode: Origin sent


def test_an_allowed_origin_is_served_in_a_real_browser(
    seen_bridge: tuple[Bridge, Seen, PageServer],
    upstream: FakeUpstream,
    browse: Callable[[PageServer, str], dict[str, Any]],
) -> None:
    _, seen, server = seen_bridge
    upstream.reply(JSONReply(completion("hello, page")))

    report = browse(server, f"http://localhost:{server.port}/friend.html")

    results = {r["name"]: r for r in report["results"]}
    sdk_call = results["JSON with the SDK's headers"]
    assert sdk_call["status"] == 200, (sdk_call, seen.requests)
    assert json.loads(sdk_call["body"])["content"] == [{"type": "text", "text": "hello, page"}]
    not_json = results["text/plain, cors"]
    assert not_json["status"] == 400
    assert json.loads(not_json["body"])["error"]["type"] == "invalid_request_error"
    assert len(upstream.requests) == 1
    assert ("OPTIONS", "/v1/messages", 204) in seen.requests
