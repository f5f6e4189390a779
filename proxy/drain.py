"""Graceful shutdown: in-flight requests finish, or end with an Anthropic error in time.

On SIGINT/SIGTERM uvicorn stops accepting connections, then waits up to
`timeout_graceful_shutdown` seconds for the requests in flight before it cancels them. A cancelled
stream just stops, which a client cannot tell from a network fault; so `Server.shutdown` starts
a `Drain`, which shortly before that deadline ends what is still running itself: a stream with an
`error` event, a request still waiting for the upstream with a 529 `overloaded_error` (which
clients retry). Then uvicorn runs the lifespan's shutdown, which closes the journal.

A second Ctrl-C ends what is in flight at once, the same way (uvicorn's own force-quit would cut
the streams mid-body); a third one is uvicorn's force-quit. Listeners (`Drain.on_stop`) hear of
both at once, with how many requests are in flight, so `serve` can say so.

`serve` runs the app on `drain.Server(config, app.state.drain)` instead of `uvicorn.Server`
(or `drain.run(app, **uvicorn_options)` instead of `uvicorn.run`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Protocol

import anyio
import uvicorn
from starlette.applications import Starlette

from . import http_limits
from .config import Settings
from .core.errors import BridgeError

# Work still running this long before uvicorn's grace period ends is ended by the drain,
# leaving the time to write the error and close the connection.
MARGIN = 1.0


class Inbox(Protocol):
    """What a stream's relay waits on (an `asyncio.Queue` will do): woken at expiry."""

    def empty(self) -> bool: ...
    def put_nowait(self, item: object) -> None: ...


log = logging.getLogger("claude_bridge.drain")


@dataclass(frozen=True)
class Stopping:
    """What a stop listener hears: the server began to stop, or is ending what is left now."""

    in_flight: int
    """Requests still running."""
    ends_in: float | None
    """Seconds until the drain ends them (0: now; None: it waits for them however long)."""


class ShuttingDown(BridgeError):
    status = 529
    type = "overloaded_error"


def deadline(grace: float) -> float:
    """Seconds after shutdown began when the drain ends what is left: a second before the
    grace period runs out, or half-way through a grace period under two seconds."""
    return max(grace - MARGIN, grace / 2)


class Drain:
    """Shared by the pipeline's exchanges; `begin(grace)` once, from the server's loop."""

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self._queues: set[Inbox] = set()
        self._scopes: set[anyio.CancelScope] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[Stopping], None]] = []

    def error(self) -> ShuttingDown:
        return ShuttingDown("claude-bridge is shutting down; try again")

    def on_stop(self, listener: Callable[[Stopping], None]) -> None:
        """Call `listener` (on the server's loop) when shutdown begins and when what is in
        flight is ended early."""
        self._listeners.append(listener)

    def begin(self, grace: float | None, in_flight: int = 0) -> None:
        """Shutdown started; with no grace period (None: wait forever) nothing is ever cut."""
        if self.draining:
            return
        self.draining = True
        self._loop = asyncio.get_running_loop()
        if grace is not None:
            self._timer = self._loop.call_later(deadline(grace), self.expire)
        self._notify(Stopping(in_flight, None if grace is None else deadline(grace)))

    def end_now(self, in_flight: int) -> None:
        """End what is in flight now (the second Ctrl-C). Safe from a signal handler: the work
        is done on the server's loop."""
        if self._loop is None or self.expired:
            return
        self._loop.call_soon_threadsafe(self._end_now, in_flight)

    def _end_now(self, in_flight: int) -> None:
        if not self.expired:
            self._notify(Stopping(in_flight, 0.0))
            self.expire()

    def _notify(self, stopping: Stopping) -> None:
        for listener in self._listeners:
            try:
                listener(stopping)
            except Exception:
                log.exception("stop listener %r failed", listener)

    def expire(self) -> None:
        """End everything still in flight now."""
        if self.expired:
            return
        self.expired = True
        for queue in self._queues:
            # A relay waiting for upstream bytes wakes up on this; one that is busy sees
            # `expired` before it takes its next item.
            if queue.empty():
                queue.put_nowait(self.error())
        for scope in self._scopes:
            scope.cancel()

    # -- what the pipeline uses

    def watch(self, queue: Inbox) -> None:
        """A stream's relay queue, to be woken at expiry."""
        self._queues.add(queue)

    def unwatch(self, queue: Inbox) -> None:
        self._queues.discard(queue)

    def guard(self) -> Guarded:
        """Around a wait for the upstream's answer: at expiry it raises `ShuttingDown`."""
        return Guarded(self)


class Guarded:
    """`Drain.guard`: an anyio scope, so that an httpcore transport's shielded clean-up is
    respected (a plain task cancel can lose the connection from its pool). A class rather than
    a generator: it is entered by every request."""

    __slots__ = ("_drain", "_scope")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> None:
        drain = self._drain
        if drain.expired:
            raise drain.error()
        scope = self._scope = anyio.CancelScope()
        scope.__enter__()
        drain._scopes.add(scope)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        scope = self._scope
        assert scope is not None
        self._drain._scopes.discard(scope)
        # The scope swallows only the cancellation it caught, which becomes `ShuttingDown`.
        scope.__exit__(kind, error, trace)
        if scope.cancelled_caught:
            raise self._drain.error() from None


class Server(uvicorn.Server):
    """uvicorn's server, which starts the app's drain when it begins to shut down."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        """`on_started` is called once the server listens (`serve --workers` tells the
        parent)."""
        super().__init__(config)
        self.drain = drain
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.begin(self.config.timeout_graceful_shutdown, len(self.server_state.tasks))
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn takes a second Ctrl-C as force-quit, which cuts open streams mid-body: end
        # them with their error first; a Ctrl-C after that is uvicorn's force-quit.
        if sig == signal.SIGINT and self.drain.draining and not self.drain.expired:
            self.drain.end_now(len(self.server_state.tasks))
            return
        super().handle_exit(sig, frame)


GRACE = 5
"""Seconds requests in flight get when a server stops, before streams end with an `error`."""
KEEP_ALIVE = 65
"""Longer than the clients' pooled-connection expiry (httpx: 5 s), so a client never reuses a
connection the server is closing at that moment."""


def server_config(app: Starlette, settings: Settings, **options: Any) -> uvicorn.Config:
    """How claude-bridge serves `app` (`serve`, and the proxy `code` and `doctor` start): header
    size, request timeouts and the connection cap of `http_limits`; our handlers (proxy.logs)
    take uvicorn's records; the grace period and keep-alive above. `options`: the rest."""
    return uvicorn.Config(
        app,
        log_config=None,
        log_level=None,
        timeout_graceful_shutdown=GRACE,
        timeout_keep_alive=KEEP_ALIVE,
        **http_limits.uvicorn_options(settings),
        **options,
    )


def run(app: Starlette, *, sockets: list[socket.socket] | None = None, **options: Any) -> None:
    """Like `uvicorn.run(app, **options)`, for an app made by `create_app`: with its drain."""
    Server(uvicorn.Config(app, **options), app.state.drain).run(sockets=sockets)
