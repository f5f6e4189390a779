"""`serve`'s live dashboard: a bus subscriber that renders with rich `Live`.

Cost to the proxy: the listener appends `(kind, exchange)` to a bounded deque and returns (O(1),
no lock, cannot fail). Everything else runs in `Live`'s refresh thread, 4 times a second: the
queue is drained into bounded state (a dict of in-flight exchanges, a deque of recent ones,
counters), then one frame is drawn by `render.dashboard`. In-flight progress (first byte,
tokens so far) is read from the live `Exchange` objects, so it needs no event per chunk.
A failing frame is logged once and replaced by a one-line notice; requests never see it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.logs import failed

from . import render
from .render import Finished, Health, ServerInfo, Spend, View

log = logging.getLogger("claude_bridge.dashboard")

REFRESH_PER_SECOND = 4
RECENT = 200
"""Finished requests kept for the table and the percentiles."""
MAX_IN_FLIGHT = 1000
INBOX = 100_000
"""Events waiting for the next frame; beyond this the oldest are dropped, never the proxy."""
MAX_ERROR_TYPES = 20
MAX_SESSIONS = 50
"""Client sessions whose totals are kept, the most recently active ones."""
MAX_REPORTED = 20
"""Distinct frame failures logged; the display keeps saying so after that."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def _local_now() -> datetime:
    return datetime.now().astimezone()


class Dashboard:
    """Subscribe the instance to a `Bus`; run `live()` around the server."""

    def __init__(
        self,
        info: ServerInfo,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _local_now,
        recent: int = RECENT,
        health: Callable[[], Health] = Health,
    ) -> None:
        """`health` says how the workers and the journal writer are doing, at each frame."""
        self.info = info
        self._health = health
        self.console = console or Console()
        self._clock = clock
        self._wall = wall
        self._started = clock()
        self._inbox: deque[tuple[str, Exchange]] = deque(maxlen=INBOX)
        # Only the thread that draws touches what follows, under this lock (rich may also
        # draw from the event loop's thread when something prints above the display).
        self._lock = threading.RLock()
        self._in_flight: dict[str, Exchange] = {}
        self._recent: deque[Finished] = deque(maxlen=recent)
        self._requests = 0
        self._errors = 0
        self._input = self._cached = self._output = self._written = 0
        self._spend = Spend()
        self._sessions: dict[str, Spend] = {}
        self._error_types: Counter[str] = Counter()
        self._second = [-1] * 60
        self._per_second = [0] * 60
        self._reported: set[str] = set()

    # -- the listener: O(1), never raises --------------------------------------------------

    def __call__(self, kind: str, exchange: Exchange) -> None:
        self._inbox.append((kind, exchange))

    # -- state, on the drawing thread -------------------------------------------------------

    def _drain(self, now: float, wall: datetime) -> None:
        inbox = self._inbox
        while inbox:
            kind, exchange = inbox.popleft()
            if kind == "start":
                self._in_flight[exchange.id] = exchange
                if len(self._in_flight) > MAX_IN_FLIGHT:
                    del self._in_flight[next(iter(self._in_flight))]
            elif kind == "finish":
                self._in_flight.pop(exchange.id, None)
                self._finish(exchange, now, wall)
        # An exchange whose "finish" was lost (or never published) leaves the table anyway.
        for key in [k for k, e in self._in_flight.items() if e.finished is not None]:
            del self._in_flight[key]

    def _finish(self, exchange: Exchange, now: float, wall: datetime) -> None:
        finished = exchange.finished if exchange.finished is not None else now
        at = wall - timedelta(seconds=max(now - finished, 0.0))
        self._recent.appendleft(Finished(exchange, at))
        self._requests += 1
        self._input += exchange.input_tokens
        self._cached += exchange.cached_tokens
        self._output += exchange.output_tokens
        self._written += exchange.cache_write_tokens
        self._spend = self._spend.plus(exchange)
        session = exchange.session_id
        if session is not None:
            # Re-inserted, so the dict runs from the least to the most recently active.
            spent = self._sessions.pop(session, Spend())
            self._sessions[session] = spent.plus(exchange)
            if len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        if failed(exchange):
            self._errors += 1
            kind = exchange.error_type or f"http {exchange.status}"
            if kind not in self._error_types and len(self._error_types) >= MAX_ERROR_TYPES:
                kind = "other"
            self._error_types[kind] += 1
        second = int(finished)
        slot = second % 60
        if self._second[slot] != second:
            self._second[slot], self._per_second[slot] = second, 0
        self._per_second[slot] += 1

    def view(self) -> View:
        """Take in the events so far and return this frame's state."""
        with self._lock:
            now, wall = self._clock(), self._wall()
            self._drain(now, wall)
            # Newest first by when they finished: with workers, events arrive in batches
            # from each process, a few tens of milliseconds apart.
            recent = sorted(self._recent, key=lambda done: done.at, reverse=True)
            ok = [d.exchange for d in recent if not failed(d.exchange)]
            durations = [e.duration for e in ok if e.duration is not None]
            ttfts = [e.ttft for e in ok if e.ttft is not None]
            current = int(now)
            per_minute = sum(
                n for s, n in zip(self._second, self._per_second, strict=True) if current - s < 60
            )
            return View(
                info=self.info,
                now=now,
                uptime=now - self._started,
                requests=self._requests,
                errors=self._errors,
                input_tokens=self._input,
                cached_tokens=self._cached,
                output_tokens=self._output,
                per_minute=per_minute,
                in_flight=sorted(self._in_flight.values(), key=lambda e: e.started),
                recent=recent,
                duration_p50=percentile(durations, 0.5),
                duration_p95=percentile(durations, 0.95),
                ttft_p50=percentile(ttfts, 0.5),
                ttft_p95=percentile(ttfts, 0.95),
                window=len(ok),
                error_types=self._error_types.most_common(),
                cache_write_tokens=self._written,
                spend=self._spend,
                sessions=list(reversed(self._sessions.items())),
                health=self._health(),
            )

    # -- drawing ------------------------------------------------------------------------------

    def renderable(self) -> RenderableType:
        """One frame, sized to the console; a failure is logged once and drawn as one line."""
        try:
            width, height = self.console.size
            return render.dashboard(self.view(), width, height - 1)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message not in self._reported and len(self._reported) < MAX_REPORTED:
                # Logging may print above the display, which draws again: mark it first.
                self._reported.add(message)
                log.exception("dashboard frame failed")
            return Text(f"dashboard failed ({message}); the proxy is still serving", style="red")

    @contextmanager
    def live(self) -> Iterator[Live]:
        """The live display, refreshed at a fixed rate (never per event), left on screen at exit."""
        with Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=REFRESH_PER_SECOND,
            redirect_stdout=True,
            redirect_stderr=True,
            vertical_overflow="crop",
        ) as live:
            yield live
