"""Graceful shutdown: in-flight requests finish, or end with an Anthropic error in time.

On SIGINT/SIGTERM uvicorn stops accepting connections, then waits up to
`timeout_graceful_shutdown` seconds for the requests in flight before it cancels them. A cancelled
stream just stops, which a client cannot tell from a network fault; so `Server.shutdown` starts
a `Drain`, which shortly before that deadline ends what is still running itself: a stream with an
`error` event, a request still waiting for the upstream with a 529 `overloaded_error` (which
clients retry). Then uvicorn runs the lifespan's shutdown, which closes the journal.

`serve` runs the app on `drain.Server(config, app.state.drain)` instead of `uvicorn.Server`
(or `drain.run(app, **uvicorn_options)` instead of `uvicorn.run`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette

from .core.errors import BridgeError

# Work still running this long before uvicorn's grace period ends is ended by the drain,
# leaving the time to write the error and close the connection.
MARGIN = 1.0


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
        self._queues: set[asyncio.Queue[object]] = set()
        self._scopes: set[anyio.CancelScope] = set()
        self._timer: asyncio.TimerHandle | None = None

    def error(self) -> ShuttingDown:
        return ShuttingDown("claude-bridge is shutting down; try again")

    def begin(self, grace: float | None) -> None:
        """Shutdown started; with no grace period (None: wait forever) nothing is ever cut."""
        if self.draining:
            return
        self.draining = True
        if grace is not None:
            self._timer = asyncio.get_running_loop().call_later(deadline(grace), self.expire)

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

    def watch(self, queue: asyncio.Queue[object]) -> None:
        """A stream's relay queue, to be woken at expiry."""
        self._queues.add(queue)

    def unwatch(self, queue: asyncio.Queue[object]) -> None:
        self._queues.discard(queue)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Around a wait for the upstream's answer: at expiry it raises `ShuttingDown`.

        An anyio scope, so that an httpcore transport's shielded clean-up is respected (a plain
        task cancel can lose the connection from its pool)."""
        if self.expired:
            raise self.error()
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)
        if scope.cancelled_caught:
            raise self.error()


class Server(uvicorn.Server):
    """uvicorn's server, which starts the app's drain when it begins to shut down."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.begin(self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets=sockets)


def run(app: Starlette, *, sockets: list[socket.socket] | None = None, **options: Any) -> None:
    """Like `uvicorn.run(app, **options)`, for an app made by `create_app`: with its drain."""
    Server(uvicorn.Config(app, **options), app.state.drain).run(sockets=sockets)
