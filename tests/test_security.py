"""Security: loopback by default, the client token, no key in anything written, no fetching.

* `serve` binds 127.0.0.1 unless told otherwise; binding beyond loopback with no client token
  is warned about in red, or refused with `--strict` (`cli/bind_check.py`).
* With `auth_token` set, clients must present it (`x-api-key` or `Authorization: Bearer`),
  compared in constant time; otherwise 401 `authentication_error`, before the body is read.
* A recognisable upstream key and client token appear in nothing the bridge writes: request
  lines, JSON events, log files, journals, error messages, `config show`, the dashboard; even
  when the upstream echoes the key back in its errors.
* Image and document URLs go upstream as they are: the bridge never fetches them.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from conftest import (
    IN_PROCESS_URL,
    UPSTREAM_KEY,
    Bridge,
    make_client,
    serving,
)
from rich.console import Console
from starlette.testclient import TestClient
from upstream import FakeUpstream, JSONReply, RawReply, SSEReply, chunk, completion, text_stream

from claude_bridge.cli import bind_check
from claude_bridge.cli.dashboard import Dashboard
from claude_bridge.cli.render import ServerInfo
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import ConfigError, Settings
from claude_bridge.proxy.events import Bus

MODEL = "claude-sonnet-4-6"
HI = [{"role": "user", "content": "Hi"}]
TOKEN = "bridge-client-token-0123456789"
# Shaped so that no generic pattern (`sk-...`, `Bearer ...`) would catch them: only the
# bridge's knowledge of its own secrets can keep them out.
CANARY_KEY = "canaryUPSTREAMkey7f3a9c2e51d04b8b"
CANARY_TOKEN = "canaryCLIENTtoken44e1b9d07a"
CLI = Path(sys.executable).parent / "claude-bridge"
START_TIMEOUT = 20.0


# -- binding ------------------------------------------------------------------------------


def test_default_bind_is_loopback() -> None:
    assert Settings().host == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("api.localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("::ffff:10.0.0.1", False),
        ("my-laptop.lan", False),
        ("localhost.evil.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert bind_check.is_loopback(host) is loopback


def test_exposure() -> None:
    assert bind_check.exposure("127.0.0.1", None) is None
    assert bind_check.exposure("0.0.0.0", TOKEN) is None
    assert bind_check.exposure("0.0.0.0", Settings(auth_token=TOKEN).auth_token) is None
    for token in (None, "", Settings(auth_token="").auth_token):
        problem = bind_check.exposure("0.0.0.0", token)
        assert problem is not None and "0.0.0.0" in problem and "AUTH_TOKEN" in problem


def test_exposed_bind_is_warned_about_in_red() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=300)

    bind_check.enforce("0.0.0.0", None, strict=False, console=console)
    bind_check.enforce("127.0.0.1", None, strict=False, console=console)
    bind_check.enforce("[::]", TOKEN, strict=False, console=console)

    text = out.getvalue()
    assert text.count("warning:") == 1
    assert "\x1b[1;31mwarning:" in text and "\x1b[31mlistening on 0.0.0.0" in text


def test_strict_refuses_an_exposed_bind() -> None:
    console = Console(file=io.StringIO())
    with pytest.raises(ConfigError, match="refusing to start"):
        bind_check.enforce("0.0.0.0", None, strict=True, console=console)
    bind_check.enforce("0.0.0.0", TOKEN, strict=True, console=console)
    bind_check.enforce("localhost", None, strict=True, console=console)


# -- the client token ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_bridge(upstream_server: FakeUpstream) -> Iterator[Bridge]:
    yield from serving(upstream_server.base_url, auth_token=TOKEN)


@pytest.fixture
def locked(locked_bridge: Bridge, upstream: FakeUpstream) -> Bridge:
    return locked_bridge


def post(bridge: Bridge, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("json", {"model": MODEL, "max_tokens": 5, "messages": HI})
    with httpx.Client(base_url=bridge.url, timeout=10) as http:
        return http.post(path, headers={"anthropic-version": "2023-06-01", **headers}, **kwargs)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "wrong"},
        {"x-api-key": TOKEN[:-1]},
        {"x-api-key": TOKEN + "x"},
        {"authorization": "Bearer wrong"},
        {"authorization": TOKEN},
        {"authorization": f"Basic {TOKEN}"},
        {"x-api-key": ""},
    ],
    ids=["none", "wrong", "prefix", "longer", "bearer-wrong", "no-scheme", "basic", "empty"],
)
def test_without_the_token_is_401(
    locked: Bridge, upstream: FakeUpstream, path: str, headers: dict[str, str]
) -> None:
    response = post(locked, path, headers)

    assert response.status_code == 401
    error = response.json()
    assert error["error"]["type"] == "authentication_error"
    assert error["request_id"] == response.headers["request-id"]
    assert TOKEN not in response.text
    assert upstream.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": TOKEN},
        {"authorization": f"Bearer {TOKEN}"},
        {"authorization": f"bearer {TOKEN}"},
    ],
    ids=["x-api-key", "bearer", "bearer-lowercase"],
)
def test_with_the_token(locked: Bridge, upstream: FakeUpstream, headers: dict[str, str]) -> None:
    upstream.reply(JSONReply(completion("ok")))

    assert post(locked, "/v1/messages", headers).status_code == 200
    assert post(locked, "/v1/messages/count_tokens", headers).status_code == 200

    # The client's credentials stay with the bridge; the upstream gets its own key.
    sent = upstream.last.headers
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in sent and TOKEN not in json.dumps(sent)


def test_the_sdk_with_and_without_the_token(locked: Bridge, upstream: FakeUpstream) -> None:
    upstream.reply(JSONReply(completion("ok")))
    with make_client(locked, api_key=TOKEN) as sdk:
        assert sdk.messages.create(model=MODEL, max_tokens=5, messages=HI).content  # type: ignore[arg-type]
    with make_client(locked, api_key="nope") as sdk, pytest.raises(anthropic.AuthenticationError):
        sdk.messages.create(model=MODEL, max_tokens=5, messages=HI)  # type: ignore[arg-type]


def test_token_is_checked_before_the_body_is_read(locked: Bridge, upstream: FakeUpstream) -> None:
    """A stranger cannot make the bridge read (or refuse by size) 33 MB."""
    json_type = {"content-type": "application/json"}
    response = post(locked, "/v1/messages", json_type, content=b"x" * (33 * 1024 * 1024))

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_token_is_compared_in_constant_time(
    locked: Bridge, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what proxy/app.py calls

    post(locked, "/v1/messages/count_tokens", {"x-api-key": "guess"})

    assert compared == [(b"guess", TOKEN.encode())]


def test_no_token_no_check(bridge: Bridge, upstream: FakeUpstream) -> None:
    """Without `auth_token` (the default, on loopback), any key or none is accepted."""
    assert post(bridge, "/v1/messages/count_tokens", {}).status_code == 200


# -- secrets in what is written -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def cli_env(home: Path, upstream_url: str, port: int) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
    return {
        **keep,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "CLAUDE_BRIDGE_HOME": str(home / "bridge"),
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": CANARY_KEY,
        "CLAUDE_BRIDGE_AUTH_TOKEN": CANARY_TOKEN,
        "BIG_MODEL": "big-model",
        "CLAUDE_BRIDGE_PORT": str(port),
        "CLAUDE_BRIDGE_RECORD": "true",
        "CLAUDE_BRIDGE_RECORD_DIR": str(home / "journal"),
        "CLAUDE_BRIDGE_RETRIES": "0",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }


def leaky_replies() -> list[Any]:
    """Upstream answers that carry the key back, as some upstreams do in their errors."""
    return [
        JSONReply(completion("fine")),
        SSEReply(text_stream(["fine ", "stream"])),
        JSONReply(
            {
                "error": {
                    "message": f"Incorrect API key provided: {CANARY_KEY}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            status=401,
        ),
        RawReply(f"<html><body>upstream broke, key={CANARY_KEY}</body></html>", status=500),
        SSEReply(
            [
                chunk({"role": "assistant", "content": "Par"}),
                f'data: {{"error": {{"message": "bad key {CANARY_KEY}", "type": "server_error"}}}}'
                "\n\n",
            ]
        ),
        JSONReply(
            {"error": {"message": f"slow down, Bearer {CANARY_KEY}"}},
            status=429,
            headers={"retry-after": "1"},
        ),
    ]


def drive(url: str, token: str) -> list[str]:
    """The requests of a session, good and bad; every response as text (headers, body)."""
    seen: list[str] = []
    request = {"model": MODEL, "max_tokens": 5, "messages": HI}
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        for stream in (False, True, False, False, True, False):
            response = http.post("/v1/messages", json={**request, "stream": stream})
            seen.append(str(response.headers) + response.text)
        seen.append(http.post("/v1/messages/count_tokens", json=request).text)
        bad_json = {"content-type": "application/json"}
        seen.append(http.post("/v1/messages", content=b"{not json", headers=bad_json).text)
        bad = http.post("/v1/messages", json=request, headers={"x-api-key": "not the token"})
        assert bad.status_code == 401
        seen.append(str(bad.headers) + bad.text)
    return seen


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a readiness condition, bounded by the deadline
    raise AssertionError("serve did not start")


def listening_addresses(port: int) -> set[str]:
    """The local addresses of LISTEN sockets on `port`, from the kernel's table (Linux)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize(
    "mode", [["--no-dashboard"], ["--log-format", "json"]], ids=["lines", "json"]
)
def test_no_secret_in_anything_serve_writes(
    tmp_path: Path, upstream: FakeUpstream, mode: list[str]
) -> None:
    port = free_port()
    log_file = tmp_path / "logs" / "bridge.jsonl"
    env = cli_env(tmp_path, upstream.base_url, port)
    upstream.reply(*leaky_replies())
    command = [str(CLI), "serve", *mode, "--log-level", "debug", "--log-file", str(log_file)]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        assert listening_addresses(port) in ({"0100007F"}, set()), "bound beyond loopback"
        responses = drive(url, CANARY_TOKEN)
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=START_TIMEOUT)

    assert len(upstream.requests) == 6
    # The upstream got the key (it is its key), and nothing else of ours.
    assert upstream.requests[0].headers["authorization"] == f"Bearer {CANARY_KEY}"
    assert CANARY_TOKEN not in json.dumps([r.headers for r in upstream.requests])

    written = {
        "stdout": stdout.decode(),
        "stderr": stderr.decode(),
        **{str(p): p.read_text() for p in tmp_path.rglob("*") if p.is_file()},
        **{f"response {i}": text for i, text in enumerate(responses)},
    }
    journals = list((tmp_path / "journal").glob("*.jsonl"))
    # Every /v1/messages exchange: the six answered, the bad JSON and the wrong token.
    assert journals and sum(len(p.read_text().splitlines()) for p in journals) == 8
    assert log_file.stat().st_size > 0 and written["stdout"]
    # The errors did reach the client, with the key masked.
    assert any("Incorrect API key provided" in text for text in responses)
    for where, text in written.items():
        assert CANARY_KEY not in text, f"the upstream key is in {where}"
        assert CANARY_TOKEN not in text, f"the client token is in {where}"
        assert CANARY_KEY[:12] not in text, f"most of the upstream key is in {where}"


def test_no_secret_in_config_commands(tmp_path: Path) -> None:
    env = cli_env(tmp_path, "http://127.0.0.1:9/v1", 8082)
    target = tmp_path / "written.toml"

    show = subprocess.run(
        [str(CLI), "config", "show"], env=env, cwd=tmp_path, capture_output=True, check=True
    )
    subprocess.run(
        [str(CLI), "config", "init", str(target)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )

    shown = json.loads(show.stdout)
    assert shown["openai_api_key"] and shown["auth_token"], "secrets are shown masked"
    for text in (show.stdout.decode(), show.stderr.decode(), target.read_text()):
        assert CANARY_KEY not in text and CANARY_TOKEN not in text
        assert CANARY_KEY[:12] not in text and CANARY_TOKEN[:12] not in text


def test_no_secret_on_the_dashboard(upstream: FakeUpstream) -> None:
    settings = Settings(
        openai_base_url=upstream.base_url,
        openai_api_key=CANARY_KEY,
        auth_token=CANARY_TOKEN,
        retries=0,
    )
    bus = Bus()
    console = Console(file=io.StringIO(), width=220, height=60, record=True)
    dashboard = Dashboard(ServerInfo.from_settings(settings), console=console)
    bus.subscribe(dashboard)
    upstream.reply(*leaky_replies())

    headers = {"x-api-key": CANARY_TOKEN}
    request = {"model": MODEL, "max_tokens": 5, "messages": HI}
    app = create_app(settings, bus=bus)
    with TestClient(app, base_url=IN_PROCESS_URL, raise_server_exceptions=False) as client:
        responses = [
            client.post("/v1/messages", json={**request, "stream": stream}, headers=headers).text
            for stream in (False, True, False, False, True, False)
        ]
    console.print(dashboard.renderable())

    frame = console.export_text()
    assert "authentication_error" in frame or "rate_limit_error" in frame, frame
    assert CANARY_KEY not in frame and CANARY_KEY[:12] not in frame
    # The client token only in the line the user pastes to start Claude Code with it.
    shown = [line for line in frame.splitlines() if CANARY_TOKEN in line]
    assert [line.split()[1] for line in shown] == [f"ANTHROPIC_AUTH_TOKEN={CANARY_TOKEN}"]
    assert all(CANARY_KEY not in text for text in responses)


# -- URLs are not fetched -----------------------------------------------------------------


def test_image_and_document_urls_are_passed_not_fetched(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """The URLs point at a server that records every request: only the chat call arrives."""
    image = f"http://127.0.0.1:{upstream.port}/secret-image.png"
    document = f"http://127.0.0.1:{upstream.port}/internal/report.pdf"
    upstream.reply(JSONReply(completion("seen")))

    client.messages.create(
        model=MODEL,
        max_tokens=5,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": image}},
                    {"type": "document", "source": {"type": "url", "url": document}},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )

    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"]
    parts = upstream.last.json["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": image}} in parts
    assert any(document in part.get("text", "") for part in parts)


def test_credentials_in_the_upstream_url_are_never_shown(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    """`user:password@` in `openai_base_url` stays out of the health answer and the errors."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # No key: it and the URL's credentials would both be the Authorization header.
    bridge = make_bridge(
        openai_base_url=f"http://bob:hunter2secret@127.0.0.1:{port}/v1",
        openai_api_key=None,
        auth_token=TOKEN,
    )

    # The token holder's health answer: the only one that names the upstream.
    with httpx.Client(base_url=bridge.url, headers={"x-api-key": TOKEN}, timeout=10) as http:
        health = http.get("/")
        failed = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HI})

    assert health.json()["upstream"] == f"127.0.0.1:{port}"
    assert failed.status_code == 500 and f"127.0.0.1:{port}" in failed.text
    for text in (health.text, failed.text):
        assert "hunter2secret" not in text and "bob" not in text
