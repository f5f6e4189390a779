"""One exchange: plan it, call the upstream, translate back; publish events.

The routes stay thin: they hand raw bytes in and get a dict or a byte stream out. What is sent
and how the answer reads is the plan's (`plan.py`, in the upstream's dialect); the upstream
attempt is `Pipeline.complete` or `Pipeline.open_stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
import httpx

from . import logs
from .config import Settings
from .core.endpoint import Address
from .core.errors import BridgeError, UpstreamError, sized_overflow
from .core.routing import Route, Target
from .core.session import agent_id, session_id
from .core.source import EventSource
from .core.sse import SSEDecoder, SSEEvent, encode_event
from .core.tokens import Encoder, count_request_tokens
from .core.usage import reasoning_tokens, reported_cost
from .core.validation import parse_body
from .core.wire import dumps
from .drain import Drain
from .events import Bus, Exchange, delta_chars
from .models.anthropic import CountTokensRequest
from .offload import Offload, worth_offloading
from .plan import (
    Asked,
    Plan,
    event_source,
    offloaded_plan,
    plan,
    read,
    reply_message,
    upstream_usage,
)
from .pricing import Pricing
from .resilience.failover import Attempt, Failover
from .resilience.health import Health
from .resilience.keys import Key
from .tokenizer import count_text
from .upstream import Call, Upstream, Upstreams
from .websearch import loop as websearch
from .websearch.searcher import Searcher
from .windows import Windows

log = logging.getLogger("claude_bridge.pipeline")

T = TypeVar("T")

_END = object()
_TICK = object()
# How often per ping interval (or stall timeout, if shorter) a stream checks for silence: a
# ping goes out after between 1 and 1 + 1/TICKS_PER_INTERVAL intervals without an event.
TICKS_PER_INTERVAL = 4
# How long the end of an upstream body may take after its last event before it is cut off.
BODY_TAIL_TIMEOUT = 1.0
# Upstream pieces read ahead of a slow client, and their bytes (inflated): beyond either the
# reader waits (backpressure). The byte bound is what keeps a stream's memory small.
READ_AHEAD = 64
READ_AHEAD_BYTES = 256 * 1024
# Bytes of upstream events translated back to back before the relay lets the other requests
# run: a fast upstream and a fast client never make it wait otherwise.
BATCH_BYTES = 16 * 1024
# One upstream SSE event bigger than this is not a chat completion chunk: the stream fails
# rather than buffer without end.
MAX_EVENT_BYTES = 16 * 1024 * 1024


def offloaded_count(raw: bytes) -> tuple[bytes, int]:
    """`count_tokens` as a worker process runs it, with the tokenizer `serve` uses."""
    return b"", count_request_tokens(parse_body(raw, CountTokensRequest), count_text)


@dataclass
class Prepared:
    """An exchange ready for its upstream attempt."""

    stream: bool
    upstream: Upstream
    plan: Plan
    call: Call
    """What is sent, where (`Pipeline.call`)."""
    raw: bytes = b""
    """The client's body: planned again for a fallback target (`Pipeline.attempts`)."""
    client_headers: Mapping[str, str] = field(default_factory=dict)
    searching: websearch.Searching | None = None
    """This request's `web_search` tool goes through the search loop (`websearch/loop.py`)."""
    asked: Asked | None = None
    """`raw` read and validated, when that was done in this process (a worker plans the
    biggest bodies): what is planned again, so that a body is read once."""


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        upstreams: Upstreams,
        bus: Bus,
        encoder: Callable[[], Encoder],
        clock: Callable[[], float] = time.monotonic,
        drain: Drain | None = None,
        pricing: Pricing | None = None,
        health: Health | None = None,
    ) -> None:
        """`health`: the upstreams' breakers and key pools (a test's has its own clock)."""
        self.settings = settings
        self.upstreams = upstreams
        self.bus = bus
        self._encoder = encoder
        self.clock = clock
        self.drain = drain or Drain()
        self.pricing = pricing or Pricing.from_settings(settings)
        self.windows = Windows(settings)
        self.offload = Offload()
        self._endpoints = {name: u.config for name, u in upstreams.named.items()}
        self._addresses: dict[tuple[str, str, str], Address] = {}
        self.health = health or Health(settings)
        self.failover = Failover(self.health)
        self.searcher = Searcher(settings.web_search)

    def begin(self, exchange: Exchange) -> None:
        exchange.started = self.clock()
        self.bus.publish("start", exchange)

    def end(self, exchange: Exchange, status: int, error: BridgeError | None = None) -> None:
        exchange.finished = self.clock()
        exchange.status = status
        if error is not None:
            exchange.error_type, exchange.error = error.type, error.message
        exchange.cost = self.pricing.of_exchange(exchange)
        self.bus.publish("finish", exchange)

    # -- messages ------------------------------------------------------------------------

    async def prepare(
        self, raw: bytes, exchange: Exchange, client_headers: Mapping[str, str] | None = None
    ) -> Prepared:
        if exchange.trace is not None:
            exchange.trace.client_body(raw)
        logs.log_body(log, "client request", raw)
        headers = client_headers or {}
        exchange.agent_id = agent_id(headers)
        asked: Asked | None = None
        try:
            if not worth_offloading(raw):
                asked = read(raw, headers)  # once: the search loop plans its turns from it too
                ready = plan(asked, self.settings, self._endpoints, headers)
            else:
                # Seconds of CPU for the biggest bodies: in a worker process, so that every
                # other stream keeps its chunks and pings meanwhile (proxy/offload.py).
                body, ready = await self.offload.run(
                    offloaded_plan, raw, self.settings, self._endpoints, dict(headers)
                )
                ready = replace(ready, body=body)
        except BridgeError:
            exchange.session_id = session_id(headers, {})  # as far as the headers tell
            raise
        upstream = self.upstreams[ready.upstream]
        exchange.session_id = ready.session_id
        exchange.client_model, exchange.upstream_model = ready.model, ready.upstream_model
        exchange.upstream = upstream.name
        exchange.routed_by = ready.routed_by
        exchange.stream = ready.stream
        if ready.dropped:
            log.debug(
                "not sent upstream: %s", ", ".join(ready.dropped), extra={"request_id": exchange.id}
            )
        exchange.notes.extend(ready.dropped)
        logs.log_body(log, "upstream request", ready.body)
        log.debug(
            "routed %s -> %s %s",
            ready.model,
            upstream.name,
            ready.upstream_model,
            extra={"request_id": exchange.id},
        )
        self.bus.publish("routed", exchange)
        if exchange.trace is not None:
            exchange.trace.prepared(ready)
        searching = websearch.searching(asked or raw, ready, headers, self.settings)
        asked = asked or (searching.asked if searching is not None else None)
        call = self.call(ready, headers)
        return Prepared(ready.stream, upstream, ready, call, raw, headers, searching, asked)

    def call(
        self, ready: Plan, client_headers: Mapping[str, str], api_key: str | None = None
    ) -> Call:
        """The upstream request a plan makes: its dialect's URL and headers for the planned
        upstream (made once per upstream, dialect and key; `api_key`: one of its pool, else
        its own), the body, the dialect's error map."""
        upstream = self.upstreams[ready.upstream]
        dialect = ready.speaker
        endpoint = upstream.endpoint
        if api_key is not None and api_key != endpoint.api_key:
            endpoint = replace(endpoint, api_key=api_key)
        key = (upstream.name, dialect.name, endpoint.api_key)
        address = self._addresses.get(key)
        if address is None:
            own = dialect.address(endpoint)
            address = self._addresses[key] = Address(own.url, upstream.headers(own.headers))
        headers = address.headers
        forwarded = dialect.forwarded(client_headers, ready.options)
        if forwarded:
            headers = {**headers, **forwarded}
        return Call(address.url, headers, ready.body, dialect.error)

    async def complete(self, prepared: Prepared, exchange: Exchange) -> dict[str, Any]:
        message = websearch.shortcut(self, prepared, exchange)
        if message is None:
            data, prepared = await self.answered(prepared, exchange)
            exchange.first_byte = self.clock()
            if prepared.searching is not None:  # the first turn of several
                message = await websearch.complete(self, prepared, data, exchange)
            else:
                message = reply_message(data, prepared.plan)
                _account(exchange, message.get("usage"), message.get("stop_reason"))
                _account_upstream(exchange, upstream_usage(data, prepared.plan))
        if exchange.trace is not None:
            exchange.trace.client_message(message)
        return message

    async def answered(
        self, prepared: Prepared, exchange: Exchange, tried: list[Attempt] | None = None
    ) -> tuple[Any, Prepared]:
        """The upstream's JSON answer, along the chain (`attempts`)."""
        async with self.drain.guard():
            return await self.attempts(
                prepared, exchange, lambda upstream, call: upstream.complete(call), tried
            )

    async def opened(
        self, prepared: Prepared, exchange: Exchange, tried: list[Attempt] | None = None
    ) -> tuple[AsyncExitStack, httpx.Response, Prepared]:
        """The upstream's stream, open along the chain (`attempts`): its status taken, nothing
        sent to the client yet. Closing the stack closes it."""
        stack = AsyncExitStack()
        async with self.drain.guard():
            response, prepared = await self.attempts(
                prepared,
                exchange,
                lambda upstream, call: stack.enter_async_context(upstream.stream(call)),
                tried,
            )
        return stack, response, prepared

    async def attempts(
        self,
        prepared: Prepared,
        exchange: Exchange,
        send: Callable[[Upstream, Call], Awaitable[T]],
        tried: list[Attempt] | None = None,
    ) -> tuple[T, Prepared]:
        """`send` the exchange along its route's chain of targets and their keys
        (`resilience.failover` says what moves on): the first answer, and the exchange as
        prepared for the target that gave it (translation follows the target used). Each
        attempt goes into `tried` (default: the exchange's)."""
        chain = prepared.plan.route.targets

        async def ready_for(target: Target) -> Prepared:
            return prepared if target == chain[0] else self._replanned(prepared, target)

        async def attempt(ready: Prepared, key: Key, lone: bool) -> tuple[T, Prepared]:
            # The exchange names the target being tried (the dashboard's in-flight row, the
            # window of a `prompt is too long`), and at the end the one that answered.
            exchange.upstream = ready.plan.upstream
            exchange.upstream_model = ready.plan.upstream_model
            call = ready.call  # made for the upstream's own key, as most requests go
            if key.secret != ready.upstream.endpoint.api_key:
                call = self.call(ready.plan, ready.client_headers, key.secret)
            if not lone:  # in a chain the next target is the retry: the upstream must not
                call = replace(call, retries=0)
            with self._sized(ready, exchange):
                return await send(ready.upstream, call), ready

        served = await self.failover.run(
            chain,
            ready_for,
            attempt,
            windows=lambda target: self.windows.of(target.upstream, target.model).context_window,
            attempts=exchange.attempts if tried is None else tried,
            extra={"request_id": exchange.id},
        )
        answer, final = served.result
        if final is not prepared and exchange.trace is not None:
            exchange.trace.prepared(final.plan)
        return answer, final

    def _replanned(self, prepared: Prepared, target: Target) -> Prepared:
        """The exchange planned again for a fallback target (its dialect, provider profile and
        model), under the same message id."""
        to = Route(target.upstream, target.model, f"{prepared.plan.routed_by}, fallback")
        headers = prepared.client_headers
        asked = prepared.asked or prepared.raw
        again = plan(
            asked,
            self.settings,
            self._endpoints,
            headers,
            to=to,
            message_id=prepared.plan.ctx.message_id,
        )
        upstream = self.upstreams[again.upstream]
        call = self.call(again, headers)
        # Whether the proxy runs the searches depends on the target (its dialect, its own search).
        searching = websearch.searching(asked, again, headers, self.settings)
        return replace(
            prepared,
            stream=again.stream,
            upstream=upstream,
            plan=again,
            call=call,
            searching=searching,
        )

    @contextlib.contextmanager
    def _sized(self, prepared: Prepared, exchange: Exchange) -> Iterator[None]:
        """An upstream's context overflow without numbers gets the model's window, if known:
        Claude Code compacts on `prompt is too long: N tokens > M maximum` (PROTOCOL.md 4.4)."""
        try:
            yield
        except UpstreamError as error:
            if error.message.startswith("prompt is too long"):
                limits = self.windows.of(exchange.upstream, exchange.upstream_model)
                if limits.context_window:
                    body = prepared.call.body
                    size = len(body) if isinstance(body, bytes) else len(dumps(body))
                    error.message = sized_overflow(
                        error.message, limits.context_window, size // 4 + 1
                    )
            raise

    async def open_stream(self, prepared: Prepared, exchange: Exchange) -> AsyncIterator[bytes]:
        """Open the upstream stream first, so a refusal still becomes a real HTTP error;
        then the Anthropic event stream, as bytes."""
        answer = websearch.shortcut(self, prepared, exchange)
        if answer is not None:
            relay = websearch.whole(self, answer, exchange)
        else:
            stack, response, prepared = await self.opened(prepared, exchange)
            upstream = prepared.upstream
            if prepared.searching is not None:  # the first turn of several
                relay = websearch.stream(self, prepared, stack, response, exchange)
            else:
                source = event_source(prepared.plan)
                relay = self._relay(stack, upstream, upstream.chunks(response), source, exchange)
        if exchange.trace is not None:
            return exchange.trace.tap_client(relay)
        return relay

    async def _relay(
        self,
        stack: AsyncExitStack,
        upstream: Upstream,
        chunks: AsyncIterator[bytes],
        translator: EventSource,
        exchange: Exchange,
        ends: bool = True,
    ) -> AsyncIterator[bytes]:
        """The client's stream of one upstream stream; it ends the exchange unless not `ends`
        (one turn of several: `websearch.loop` ends it)."""
        queue: asyncio.Queue[object] = asyncio.Queue(READ_AHEAD)
        # The reader is stopped through an anyio scope, never `Task.cancel()`: a transport on
        # httpcore (httpx's own, which a user's replay or test may still pass in) shields its
        # connection bookkeeping from the former only, and a plain cancel landing while the
        # reader closes the response at the end of the body loses the connection from that pool
        # for good (under load it runs dry).
        stop_reading = anyio.CancelScope()
        backlog = _Backlog(READ_AHEAD_BYTES)
        reader = asyncio.create_task(_read_into(chunks, queue, backlog, stop_reading))
        decoder = SSEDecoder()
        interval = self.settings.ping_interval
        # An upstream that sends no complete event for this long has stalled, even if it
        # drips a byte now and then (which keeps httpx's own read timeout from firing).
        idle = self.settings.read_timeout
        unframed = 0  # bytes received since the last complete upstream event
        batch = 0  # bytes translated since the relay last waited
        error: BridgeError | None = None
        complete = False
        # Silences are noticed by a clock that ticks into the queue a few times per interval:
        # a timeout around every read would start and cancel a timer for every chunk.
        ticker = _Ticker(queue, min(interval, idle) / TICKS_PER_INTERVAL)
        self.drain.watch(queue)
        try:
            opening = translator.start()
            for event in opening:
                if event["type"] == "message_start":
                    # Its input estimate, kept if the client leaves early; not its output (a
                    # placeholder 1), which would hide the progress made so far.
                    usage = event["message"].get("usage") or {}
                    _account(exchange, {k: v for k, v in usage.items() if k != "output_tokens"})
            yield _encode(opening)
            last_sent = last_event = self.clock()
            # Events of pieces read ahead go out together, in one write once the queue is
            # empty (or `BATCH_BYTES` in): a burst costs one send, not one per piece.
            pending: list[bytes] = []
            while not translator.done:
                if queue.empty():
                    if pending:
                        yield b"".join(pending)
                        pending.clear()
                        last_sent = self.clock()
                        continue  # more may have come while the client took them
                    batch = 0
                    item = await queue.get()
                else:
                    item = queue.get_nowait()
                if item is _TICK:
                    if pending:
                        continue  # events are about to go: no ping, nor a stall
                    now = self.clock()
                    if now - last_event >= idle:
                        item = UpstreamError(
                            f"upstream {upstream.host} sent nothing usable for {idle:g} s",
                            status=504,
                            type="timeout_error",
                        )
                    elif now - last_sent >= interval:
                        # Claude Code aborts streams that stay quiet; buffered tool calls count.
                        yield _encode([{"type": "ping"}])
                        exchange.pings += 1
                        last_sent = self.clock()
                        continue
                    else:
                        continue
                if isinstance(item, bytes):
                    backlog.release(len(item))
                    if self.drain.expired:
                        item = self.drain.error()
                # Filled as translated: if the translation breaks, what came before it still goes.
                events: list[dict[str, Any]] = []
                try:
                    if item is _END:
                        _feed(translator, decoder.flush(), events)
                        if not translator.done:
                            events.extend(translator.finish())
                    elif isinstance(item, BridgeError):
                        error = item
                        events.extend(translator.fail(item))
                    else:
                        assert isinstance(item, bytes)
                        if exchange.first_byte is None:
                            exchange.first_byte = self.clock()
                        decoded = decoder.decode(item)
                        unframed = 0 if decoded else unframed + len(item)
                        if decoded:
                            last_event = self.clock()
                        if unframed > MAX_EVENT_BYTES:
                            error = UpstreamError(
                                f"upstream {upstream.host} sent an event of more than "
                                f"{MAX_EVENT_BYTES} bytes"
                            )
                            events.extend(translator.fail(error))
                        else:
                            _feed(translator, decoded, events)
                except Exception as exc:  # whatever the upstream sent, the client gets an ending
                    log.exception(
                        "translating the upstream stream failed", extra={"request_id": exchange.id}
                    )
                    error = UpstreamError(
                        f"upstream {upstream.host} sent a stream that could not be translated "
                        f"({type(exc).__name__})",
                        status=502,
                    )
                    # The translator may be left midway: the error event goes out regardless.
                    events.extend(translator.fail(error) or [error.event()])
                if events:
                    for event in events:
                        failure = _observe(exchange, event, upstream)
                        error = error or failure
                    pending.append(_encode(events))
                if isinstance(item, bytes):
                    batch += len(item)
                    if batch >= BATCH_BYTES:
                        if pending:
                            yield b"".join(pending)
                            pending.clear()
                            last_sent = self.clock()
                        batch = 0
                        await asyncio.sleep(0)  # one stream's flood must not hold the others
            if pending:
                yield b"".join(pending)
            complete = error is None
        finally:
            ticker.stop()
            self.drain.unwatch(queue)
            # Nothing more is translated: what the reader still reads (the body's tail) is
            # dropped, so it never waits for room.
            backlog.close()
            while not queue.empty():
                queue.get_nowait()
            try:
                with anyio.CancelScope(shield=True):  # even when the client went away
                    if complete:
                        # The body's last bytes follow [DONE]: reading them lets the upstream
                        # connection go back to the pool instead of being dropped.
                        await asyncio.wait({reader}, timeout=BODY_TAIL_TIMEOUT)
                    stop_reading.cancel()
                    await asyncio.wait({reader})
                    await stack.aclose()
            finally:
                if ends:
                    _account_upstream(exchange, translator.upstream_usage)
                else:  # one turn of several: each turn's counts
                    websearch.turn_usage(exchange, translator.upstream_usage)
                if not complete and error is None:
                    # Closed mid-stream by its client (uvicorn cancels the response when the
                    # connection goes): what it got is what counts.
                    exchange.cancelled = True
                    exchange.output_tokens = exchange.output_so_far
                if ends:
                    self.end(exchange, 200, error)

    # -- count_tokens --------------------------------------------------------------------

    async def count_tokens(self, raw: bytes) -> dict[str, int]:
        if worth_offloading(raw):  # as in `prepare`
            _, total = await self.offload.run(offloaded_count, raw)
            return {"input_tokens": total}
        request = parse_body(raw, CountTokensRequest)
        encode = self._encoder()
        # BPE over a 50 KB prompt takes milliseconds: keep it off the event loop.
        total = await asyncio.to_thread(count_request_tokens, request, encode)
        return {"input_tokens": total}

    async def aclose(self) -> None:
        await self.offload.aclose()
        await self.searcher.aclose()


def _observe(exchange: Exchange, event: dict[str, Any], upstream: Upstream) -> BridgeError | None:
    """Account one event sent to the client; the failure it reports, if it is an `error`.
    Passed-through events are the upstream's, so no field is taken for granted."""
    kind = event["type"]
    if kind == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict):
            exchange.output_chars += delta_chars(delta)
    elif kind == "message_start":
        message = event.get("message")
        if isinstance(message, dict):
            _account(exchange, message.get("usage"))
    elif kind == "message_delta":
        delta = event.get("delta")
        stop = delta.get("stop_reason") if isinstance(delta, dict) else None
        _account(exchange, event.get("usage"), stop)
    elif kind == "error" and isinstance(event.get("error"), dict):
        detail = event["error"]
        # Upstreams echo keys in their error texts.
        message = upstream.scrub(str(detail.get("message") or "upstream error"))
        detail["message"] = message
        return BridgeError(message, type=str(detail.get("type") or "api_error"))
    return None


def _account(exchange: Exchange, usage: Any, stop: Any = None) -> None:
    """Take the counts `usage` has (a `message_start` has the input, a pass-through upstream's
    `message_delta` often only the output)."""
    if isinstance(usage, dict):
        for key, field in _USAGE_FIELDS:
            value = usage.get(key)
            if isinstance(value, int):
                setattr(exchange, field, value)
        _account_upstream(exchange, usage)  # a passed-through upstream's own usage
    if isinstance(stop, str):
        exchange.stop_reason = stop


def _account_upstream(exchange: Exchange, usage: Any) -> None:
    """What only the upstream's own usage says: the reasoning part of the output, the cost."""
    exchange.reasoning_tokens = reasoning_tokens(usage) or exchange.reasoning_tokens
    cost = reported_cost(usage)
    if cost is not None:
        exchange.upstream_cost = cost


_USAGE_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("cache_read_input_tokens", "cached_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
    ("output_tokens", "output_tokens"),
)


def _feed(translator: EventSource, events: list[SSEEvent], out: list[dict[str, Any]]) -> None:
    """Translate `events` into `out`, one by one (`out` keeps what came before a failure)."""
    for sse in events:
        if translator.done:
            break
        out.extend(translator.feed_data(sse.data))


def _encode(events: list[dict[str, Any]]) -> bytes:
    return b"".join(map(encode_event, events))


class _Ticker:
    """Puts `_TICK` into a relay's queue every `period` seconds until stopped (skipping a
    tick when the queue is full: the relay has items to wake it)."""

    def __init__(self, queue: asyncio.Queue[object], period: float) -> None:
        self._queue = queue
        self._period = period
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(period, self._tick)

    def _tick(self) -> None:
        if not self._queue.full():
            self._queue.put_nowait(_TICK)
        self._handle = self._loop.call_later(self._period, self._tick)

    def stop(self) -> None:
        self._handle.cancel()


class _Backlog:
    """Bytes the reader queued and the relay has not taken yet. The reader waits while there
    are `limit` or more (one piece always goes, however big, so nothing can stall)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.closed = False
        self._room = asyncio.Event()

    def fits(self, size: int) -> bool:
        """Whether `size` bytes more go without waiting (`reserve` then returns at once)."""
        return not self.closed and (not self.size or self.size + size <= self.limit)

    async def reserve(self, size: int) -> bool:
        """Room for `size` bytes more; False once the relay takes no more (drop the piece)."""
        while not self.closed and self.size and self.size + size > self.limit:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            await asyncio.sleep(0)  # a reader dropping a tail must still be stoppable
            return False
        self.size += size
        return True

    def release(self, size: int) -> None:
        self.size -= size
        self._room.set()

    def close(self) -> None:
        self.closed = True
        self._room.set()


async def _read_into(
    chunks: AsyncIterator[bytes],
    queue: asyncio.Queue[object],
    backlog: _Backlog,
    scope: anyio.CancelScope,
) -> None:
    with scope:
        try:
            async for chunk in chunks:
                size = len(chunk)
                # Without a wait when there is room (the usual case): no coroutine per piece.
                if backlog.fits(size):
                    backlog.size += size
                elif not await backlog.reserve(size):
                    continue
                if queue.full():
                    await queue.put(chunk)
                else:
                    queue.put_nowait(chunk)
        except UpstreamError as exc:
            await queue.put(exc)
            return
        except Exception as exc:  # whatever it was, the stream must end (with an error)
            log.exception("reading the upstream stream failed")
            failure = f"reading the upstream stream failed: {type(exc).__name__}"
            await queue.put(UpstreamError(failure))
            return
        await queue.put(_END)
