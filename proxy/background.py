"""The proxy in a thread of this process, for `claude-bridge code` (`launch.py`).

uvicorn on a free loopback port, serving the app `serve` serves, asking for a token made for
this run alone; logging to a file only (Claude Code owns the terminal); recording when `record`
is set. It stops, with the grace period `serve` gives requests in flight, when the block that
started it ends.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from . import logs
from .app import create_app
from .config import ConfigError, Settings
from .drain import GRACE, Drain, Server, server_config
from .journal.writer import Recorder, default_dir

log = logging.getLogger("claude_bridge.background")

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
"""Seconds the proxy may take to start (loading the tokenizer and the price table included)."""


class LaunchError(ConfigError):
    """Claude Code or the proxy cannot be started: the CLI prints it as one `error:` line."""


@dataclass(frozen=True)
class Target:
    """Where Claude Code goes: a proxy's root URL and the token it wants."""

    url: str
    token: str
    reused: bool = False


def log_path(env: Mapping[str, str] | None = None) -> Path:
    """`code`'s log file: beside the journals (`$CLAUDE_BRIDGE_HOME/code.log`, else
    `~/.local/state/claude-bridge/code.log`)."""
    return default_dir(env).parent / "code.log"


class _Started(Server):
    """The draining server, telling a waiting thread when it has started (or failed to)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config, drain)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


@contextlib.contextmanager
def background_proxy(
    settings: Settings,
    *,
    log_file: Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Iterator[Target]:
    """The proxy for `settings` on a free loopback port in a thread, asking for a fresh token;
    stopped (requests in flight get `GRACE` seconds) when the block ends. `transport` puts the
    upstream in this process (`doctor --claude`'s scripted one)."""
    token = secrets.token_urlsafe(32)
    settings = settings.model_copy(
        update={"host": LOOPBACK, "port": 0, "auth_token": SecretStr(token)}
    )
    logs.configure(
        settings.log_level,
        stream=_Nowhere(),  # Claude Code owns the terminal: the log file has everything
        file=log_file or log_path(),
        secrets=settings.secrets(),
    )
    recorder = Recorder.from_settings(settings) if settings.record else None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"port": port})
    app = create_app(settings, recorder=recorder, transport=transport)
    server = _Started(
        server_config(app, settings, access_log=False),
        app.state.drain,
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="claude-bridge-proxy", daemon=True
    )
    thread.start()
    target = Target(f"http://{LOOPBACK}:{port}", token)
    try:
        if not server.ready.wait(START_TIMEOUT) or not server.started:
            raise LaunchError(f"the proxy did not start (see {log_file or log_path()})")
        _check_health(target)
        log.info("proxy for claude-bridge code listening on %s", target.url)
        yield target
    finally:
        server.should_exit = True
        thread.join(GRACE + START_TIMEOUT)
        sock.close()


class _Nowhere(io.StringIO):
    """A console that keeps nothing."""

    def write(self, text: str) -> int:
        return len(text)


def _check_health(target: Target) -> None:
    """`GET /` answers; `GET /v1/models` too, which sets the upstreams' own listings coming
    (in the background) before Claude Code asks for the list."""
    headers = {"authorization": f"Bearer {target.token}"}
    try:
        answer = httpx.get(target.url + "/", headers=headers, timeout=START_TIMEOUT)
        if answer.status_code == 200:
            httpx.get(target.url + "/v1/models", headers=headers, timeout=START_TIMEOUT)
    except httpx.HTTPError as exc:
        raise LaunchError(f"the proxy started but does not answer: {exc}") from None
    if answer.status_code != 200:
        raise LaunchError(f"the proxy started but answers {answer.status_code} to GET /")
