"""A client that leaves is forgotten at once: the work done for it is cancelled.

An ASGI server tells the app that its client left only as an `http.disconnect` from `receive()`,
and nothing calls `receive()` while a route waits on a worker, for a free upstream connection,
for the upstream's headers or for a non-streaming body (Starlette's `StreamingResponse` listens
only once the response has begun). `Departures.watch` listens meanwhile.

Listening takes a task (it must wait on `receive()` beside the work), and a task per request
costs more than the rest of the watch together (~8 us of CPU on a slow 2-core machine, against
~1.4 ms for a whole small request). So the tasks start late: a shared timer gives one to each
request still waiting at its next tick, every `WATCH_AFTER` seconds. Most requests end before
that and never pay for one; a client leaving is noticed within `WATCH_AFTER` plus the time
`receive()` takes to tell. The work runs in an anyio scope, cancelled on a disconnect: anyio's
rather than `Task.cancel()`, which a transport on httpcore shields its connection bookkeeping
from only in the former case (see `Drain.guard`).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import Receive

# A request still waiting this long (at most twice this) gets a task listening for its client.
WATCH_AFTER = 0.25


class Departures:
    """The requests of one app that are waiting, and the timer that starts their watches."""

    def __init__(self, period: float = WATCH_AFTER) -> None:
        self._period = period
        self._waiting: set[Watch] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, receive: Receive) -> Watch:
        """`async with departures.watch(request.receive):` around the waits, once the request
        body is read (from then on `receive()` only says that the client left). Raises
        `ClientDisconnect` when the client left meanwhile, the block cancelled where it
        waited."""
        return Watch(self, receive)

    def _add(self, watch: Watch) -> None:
        self._waiting.add(watch)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period, self._tick)

    def _discard(self, watch: Watch) -> None:
        self._waiting.discard(watch)

    def _tick(self) -> None:
        self._timer = None
        for watch in self._waiting:
            watch.listen()
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self._period, self._tick)


class Watch:
    __slots__ = ("_departures", "_listener", "_receive", "_scope")

    def __init__(self, departures: Departures, receive: Receive) -> None:
        self._departures = departures
        self._receive = receive
        self._scope = anyio.CancelScope()
        self._listener: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._scope.__enter__()
        self._departures._add(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._departures._discard(self)
        if self._listener is not None:
            self._listener.cancel()
        if self._scope.__exit__(exc_type, exc, tb) and self._scope.cancelled_caught:
            raise ClientDisconnect()

    def listen(self) -> None:
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._scope.cancel()
