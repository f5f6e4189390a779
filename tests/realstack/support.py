"""Plumbing for the real-stack tier: processes on loopback, a recording proxy, SSE parsing.

Everything is bounded: processes are polled for readiness with a deadline and stopped with a
timeout; the proxy forwards to one loopback address only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def run_to_end(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """A client command run to its end with no input, its output kept as text
    (`subprocess.TimeoutExpired` when it outlives `timeout`)."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def final_result(stdout: str) -> dict[str, Any] | None:
    """Claude Code's final `result` object, from --output-format json or stream-json."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("type") == "result":
            return data
    return None


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """A server subprocess with its output in a log file; started ready or not at all."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        url: str,
        log: Path,
        env: dict[str, str],
        cwd: Path,
    ) -> None:
        self.name = name
        self.url = url
        self.argv = [str(arg) for arg in argv]
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )

    def wait_ready(self, path: str, timeout: float) -> None:
        """Poll `path` until it answers 200; fail early, with the log, if the process exits."""
        url = self.url + path
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                    f"{' '.join(self.argv)}\n{tail(self.log)}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@dataclass
class Exchange:
    """One HTTP exchange seen by the recorder; the response body grows while it streams."""

    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    complete: bool = False  # the whole upstream response was received and passed on
    done: bool = False  # the recorder has finished with this exchange, whole or not

    def request_json(self) -> Any:
        return json.loads(self.request_body)

    def response_json(self) -> Any:
        return json.loads(self.response_body)

    def describe(self) -> str:
        body = self.response_body.decode(errors="replace")
        if len(body) > 3000:
            body = body[:1500] + "\n...\n" + body[-1500:]
        return f"{self.method} {self.path} -> {self.status}\n{body}"


_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
}


class Recorder:
    """A small forwarding proxy on loopback that records every exchange, streams included.

    Responses are forwarded chunk by chunk as they arrive (re-chunked), so streaming clients
    see the same timing as without it.
    """

    def __init__(self, upstream: str, timeout: float = 900.0) -> None:
        target = urlsplit(upstream)
        assert target.hostname == LOOPBACK, "the recorder only forwards to loopback"
        self.host, self.port_upstream = target.hostname, target.port or 80
        self.timeout = timeout
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                recorder._forward(self)

            def do_POST(self) -> None:
                recorder._forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def mark(self) -> int:
        with self._lock:
            return len(self.exchanges)

    def since(self, mark: int, settle: float = 10.0) -> list[Exchange]:
        """The exchanges recorded after `mark`, once each is done (or `settle` s have passed):
        a client may exit before the recorder has seen the end of the last response."""
        with self._lock:
            exchanges = list(self.exchanges[mark:])
        wait_for(lambda: all(e.done for e in exchanges), settle)
        return exchanges

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _read_body(self, handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += handler.rfile.read(size)
                handler.rfile.readline()
        length = int(handler.headers.get("content-length") or 0)
        return handler.rfile.read(length) if length else b""

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = self._read_body(handler)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        exchange = Exchange(handler.command, handler.path, dict(headers), body)
        with self._lock:
            self.exchanges.append(exchange)
        upstream = http.client.HTTPConnection(self.host, self.port_upstream, timeout=self.timeout)
        try:
            headers["accept-encoding"] = "identity"
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            exchange.status = response.status
            exchange.response_headers = {k.lower(): v for k, v in response.getheaders()}
            handler.send_response(response.status)
            for key, value in response.getheaders():
                # send_response already wrote its own Server and Date headers.
                if key.lower() not in _HOP_BY_HOP | {"server", "date"}:
                    handler.send_header(key, value)
            handler.send_header("transfer-encoding", "chunked")
            handler.end_headers()
            while chunk := response.read1(65536):
                exchange.response_body += chunk
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.flush()
            # Before the last chunk: once the client has the whole body, the record is whole.
            exchange.complete = True
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (OSError, http.client.HTTPException) as exc:
            exchange.response_body += f"\n[recorder: {type(exc).__name__}: {exc}]".encode()
            handler.close_connection = True
        finally:
            upstream.close()
            exchange.done = True


@dataclass
class SSEEvent:
    event: str | None
    data: Any


def parse_sse(body: bytes) -> list[SSEEvent]:
    """Anthropic SSE: blocks split by blank lines, each with `event:` and a JSON `data:`."""
    events = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if name is None and not data:
            continue
        joined = "\n".join(data)
        try:
            parsed: Any = json.loads(joined)
        except json.JSONDecodeError:
            parsed = joined
        events.append(SSEEvent(name, parsed))
    return events


def stream_problems(events: list[SSEEvent]) -> list[str]:
    """What in an Anthropic stream would make Claude Code retry, fall back or end silently."""
    problems = []
    names = [event.event for event in events if event.event != "ping"]
    if not names or names[0] != "message_start":
        problems.append(f"does not start with message_start: {names[:3]}")
    if not names or names[-1] != "message_stop":
        problems.append(f"does not end with message_stop: {names[-3:]}")
    if "error" in names:
        problems.append(f"error event: {[e.data for e in events if e.event == 'error']}")
    if any(event.event is None for event in events):
        problems.append("a data line without an event: line")
    open_blocks: set[Any] = set()
    seen: list[Any] = []
    for event in events:
        if not isinstance(event.data, dict):
            if event.event is not None:
                problems.append(f"{event.event}: data is not JSON: {event.data!r}")
            continue
        if event.data.get("type") != event.event:
            problems.append(f"event {event.event!r} carries type {event.data.get('type')!r}")
        index = event.data.get("index")
        if event.event == "content_block_start":
            open_blocks.add(index)
            seen.append(index)
        elif event.event == "content_block_delta" and index not in open_blocks:
            problems.append(f"delta for block {index}, which is not open")
        elif event.event == "content_block_stop":
            open_blocks.discard(index)
    if open_blocks:
        problems.append(f"blocks never stopped: {sorted(open_blocks)}")
    if seen != list(range(len(seen))):
        problems.append(f"block indexes are not 0, 1, 2...: {seen}")
    if "message_delta" not in names:
        problems.append("no message_delta (stop_reason and usage)")
    return problems


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())
