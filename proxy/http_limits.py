"""HTTP-layer limits: what uvicorn's httptools protocol leaves unbounded, per connection.

uvicorn (checked on 0.30 to 0.55) feeds all a client sends to the parser, which buffers an
unfinished request line or header whole; waits without end for a connection's first request and
for a body that stops coming; and counts connections only once a request's head is in, to answer
a plain-text 503. `LimitedHttpToolsProtocol` adds, each answer an Anthropic error body sent with
`connection: close`:

- head size: at most `head_bytes` of request line and headers reach the parser; past them, 431
  `invalid_request_error` (Claude Code sends ~1.5 KiB; Node accepts 16 KiB, nginx 32 KiB);
- head time: a head must be complete `head_timeout` s after the connection opened (its first
  request) or after its first byte (later ones: between requests uvicorn's keep-alive timeout
  applies); past that, 408 if a request had begun, else just the close;
- body time: a body may pause at most `body_idle_timeout` s and take `body_timeout` s in all
  (while the app, not the client, is behind, the clock waits); past that, 408 if no answer has
  started, else the close;
- connections: a connection beyond `max_connections` open ones gets 503 `overloaded_error`
  with `retry-after` at once, then the close, so descriptors are left for the upstream pool and
  files. At once, not after its request: waiting for that would let idle connections pile up
  past the open-file limit all the same.

Once a request is in, the connection is the app's: streams are never timed here. uvicorn's own
400 for a malformed request gets an Anthropic body too. `serve` and the tests' servers take all
this from `uvicorn_options`; WebSocket upgrades are off (they would leave this protocol).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from .config import Settings
from .core.errors import BridgeError, InvalidRequest
from .core.ids import new_request_id

if sys.platform != "win32":
    import resource

log = logging.getLogger("claude_bridge.http")

HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 30.0
BODY_IDLE_TIMEOUT = 30.0
# Node's `requestTimeout`: a 32 MB body still arrives at 110 KB/s.
BODY_TIMEOUT = 300.0
# Seconds a refused client is told to wait; the SDKs and Claude Code retry a 503 after it.
RETRY_AFTER = 1
# Descriptors kept, beyond the upstream pool, for what is not a client connection: stdio, the
# listening sockets, the event loop's own, journal and log files, DNS look-ups, a margin.
FD_RESERVE = 64
MIN_CONNECTIONS = 16
# Where the open-file limit is unknown (Windows) or unlimited.
UNBOUNDED_CONNECTIONS = 1024
# After an answer of ours, the connection is half-closed and what the client still sends is read
# and dropped, for up to LINGER s, before it is closed: closed with unread bytes, it would be
# reset, and a reset can destroy the answer before the client reads it. At most MAX_LINGERING
# connections a server linger (part of FD_RESERVE); past that they are closed at once.
LINGER = 2.0
MAX_LINGERING = 32
WARN_INTERVAL = 10.0


class RequestTimeout(BridgeError):
    status = 408
    type = "timeout_error"


class Overloaded(BridgeError):
    status = 503
    type = "overloaded_error"


def default_max_connections(upstream_pool: int) -> int:
    """The client connections the open-file limit (`ulimit -n`) leaves room for, after an
    upstream connection each (up to the pool's size) and `FD_RESERVE`."""
    if sys.platform == "win32":
        return UNBOUNDED_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNBOUNDED_CONNECTIONS
    return max(MIN_CONNECTIONS, soft - FD_RESERVE - upstream_pool)


@dataclass(frozen=True)
class Limits:
    max_connections: int
    head_bytes: int = HEAD_BYTES
    head_timeout: float = HEAD_TIMEOUT
    body_idle_timeout: float = BODY_IDLE_TIMEOUT
    body_timeout: float = BODY_TIMEOUT

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_client_connections or default_max_connections(settings.max_connections)
        )


def uvicorn_options(settings: Settings, limits: Limits | None = None) -> dict[str, Any]:
    """The `uvicorn.Config` options that serve with `limits` (default: from `settings`)."""
    bound = limits or Limits.of(settings)
    protocol = type(
        LimitedHttpToolsProtocol.__name__, (LimitedHttpToolsProtocol,), {"limits": bound}
    )
    return {"http": protocol, "ws": "none"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `limits` (set on a subclass by `uvicorn_options`)."""

    limits: ClassVar[Limits]
    # Per server, as `uvicorn_options` makes a class for each.
    _lingering_count: ClassVar[int] = 0
    _warned_at: ClassVar[float] = float("-inf")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.head_bytes: int | None = 0
        """Bytes of the current request's head fed to the parser; None once it is complete."""
        self._begun = False  # some of a request has arrived
        self._deadline: float | None = None  # by when the request must progress (loop time)
        self._body_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._answered = False  # by us: what comes next is dropped
        self._lingering = False

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Those lingering after an answer of ours are leaving: they do not count.
        served = len(self.connections) - type(self)._lingering_count
        full = served >= self.limits.max_connections
        super().connection_made(transport)
        if full:
            self._refuse()
        else:
            self._expect_at(self.loop.time() + self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._lingering:
            type(self)._lingering_count -= 1
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        # The parser keeps an unfinished header whole: give it no more of a head than the limit.
        limit = self.limits.head_bytes
        while self.head_bytes is not None and len(data) > limit - self.head_bytes:
            room = limit - self.head_bytes
            if room:
                self.head_bytes = limit
                super().data_received(data[:room])
                if self._answered or self.transport.is_closing():
                    return
            if self.head_bytes == limit:  # a complete head, or request, resets the count
                self._answer(InvalidRequest(f"request headers exceed {limit} bytes", status=431))
                return
            data = data[room:]
        if self.head_bytes is not None:
            self.head_bytes += len(data)
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        self._answer(InvalidRequest(msg))

    def shutdown(self) -> None:
        # The server is stopping: a connection lingering after an answer of ours closes now.
        if self._answered:
            self.transport.close()
        else:
            super().shutdown()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        if self._deadline is None:  # a later request: the first is timed from the connection
            self._expect_at(self.loop.time() + self.limits.head_timeout)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        super().on_headers_complete()
        now, limits = self.loop.time(), self.limits
        self._body_deadline = now + limits.body_timeout
        self._expect_at(now + min(limits.body_idle_timeout, limits.body_timeout))

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_arrived()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0
        self._begun = False
        self._deadline = None

    # -- deadlines: one timer a connection, moved only when a deadline comes sooner

    def _body_arrived(self) -> None:
        idle = self.loop.time() + self.limits.body_idle_timeout
        self._expect_at(min(idle, self._body_deadline))

    def _expect_at(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline is None or self._answered or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self._deadline:
            self._expect_at(self._deadline)
        elif self.head_bytes is None and self.flow.read_paused:
            # uvicorn stopped reading until the app takes the body: the client is not late.
            self._body_deadline = max(self._body_deadline, now + self.limits.body_idle_timeout)
            self._body_arrived()
        elif self.head_bytes is not None:
            seconds = self.limits.head_timeout
            self._time_out(f"request headers not received within {seconds:g} s")
        else:
            limits = self.limits
            self._time_out(
                f"request body not received in time (at most {limits.body_idle_timeout:g} s "
                f"without data, {limits.body_timeout:g} s in all)",
                answerable=not self.cycle.response_started,
            )

    def _time_out(self, message: str, *, answerable: bool = True) -> None:
        if answerable and self._begun:
            self._answer(RequestTimeout(message))
        else:
            self.transport.close()

    # -- answers of our own, written before (or instead of) the app's

    def _refuse(self) -> None:
        now = self.loop.time()
        cls = type(self)
        if now - cls._warned_at > WARN_INTERVAL:
            cls._warned_at = now
            log.warning(
                "%d client connections open: refusing more with 503 (max_client_connections)",
                self.limits.max_connections,
            )
        self._answer(
            Overloaded(
                f"claude-bridge has {self.limits.max_connections} connections open; try again",
                headers={"retry-after": str(RETRY_AFTER)},
            )
        )

    def _answer(self, error: BridgeError) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # A pipelined request's answer is still going out: ours cannot be put in it.
            self.transport.close()
            return
        request_id = new_request_id()
        body = json.dumps(error.body(request_id), separators=(",", ":")).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"request-id", request_id.encode()),
            *((name.encode(), value.encode()) for name, value in error.headers.items()),
        ]
        lines = [STATUS_LINE[error.status], *(b"%s: %s\r\n" % header for header in headers)]
        self.transport.write(b"".join([*lines, b"\r\n", body]))
        self._answered = True
        self._deadline = None
        cls = type(self)
        if cls._lingering_count >= MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        cls._lingering_count += 1
        self._lingering = True
        self.transport.write_eof()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER, self.transport.close)
