"""One exchange: plan it, call the upstream, translate back; publish events.

The routes stay thin: they hand raw bytes in and get a dict or a byte stream out. What is sent
and how the answer reads is the plan's (`plan.py`, in the upstream's dialect); the upstream
attempt is `Pipeline.complete` or `Pipeline.open_stream`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
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
# A client body bigger than this is prepared in steps, the loop free between them.
STEP_BYTES = 64 * 1024
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
                if len(raw) > STEP_BYTES:
                    # Reading, planning and sending a 500 KB session take ~1 ms each: between
                    # them the other requests' streams get their chunks (head-of-line).
                    await asyncio.sleep(0)
                ready = plan(asked, self.settings, self._endpoints, headers)
                if len(raw) > STEP_BYTES:
                    await asyncio.sleep(0)
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
            try:
                return await send(ready.upstream, call), ready
            except UpstreamError as error:
                self._sized(error, ready, exchange)
                raise

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

    def _sized(self, error: UpstreamError, prepared: Prepared, exchange: Exchange) -> None:
        """An upstream's context overflow without numbers gets the model's window, if known:
        Claude Code compacts on `prompt is too long: N tokens > M maximum` (PROTOCOL.md 4.4)."""
        if error.message.startswith("prompt is too long"):
            limits = self.windows.of(exchange.upstream, exchange.upstream_model)
            if limits.context_window:
                body = prepared.call.body
                size = len(body) if isinstance(body, bytes) else len(dumps(body))
                error.message = sized_overflow(error.message, limits.context_window, size // 4 + 1)

    async def open_stream(
        self, prepared: Prepared, exchange: Exchange
    ) -> AsyncGenerator[bytes, Any]:
        """Open the upstream stream first, so a refusal still becomes a real HTTP error;
        then the Anthropic event stream, as bytes. After its first piece its sender may
        `asend` it a `Write`: a plain stream's relay writes the rest with it and stops
        (`_written`); any other stream ignores it and gives its next piece."""
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
                chunks = upstream.chunks(response)
                if exchange.trace is None:
                    return _written(_Relay(self, stack, upstream, source, exchange, True), chunks)
                relay = self._relay(stack, upstream, chunks, source, exchange)
        if exchange.trace is not None:
            return exchange.trace.tap_client(relay)
        return relay

    def _relay(
        self,
        stack: AsyncExitStack,
        upstream: Upstream,
        chunks: AsyncIterator[bytes],
        translator: EventSource,
        exchange: Exchange,
        ends: bool = True,
    ) -> AsyncGenerator[bytes, object]:
        """The client's stream of one upstream stream, for a consumer that takes its pieces
        (the recording tap, the search loop); it ends the exchange unless not `ends` (one turn
        of several: `websearch.loop` ends it)."""
        return _pulled(_Relay(self, stack, upstream, translator, exchange, ends), chunks)

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


Write = Callable[[bytes], Awaitable[None]]
"""Sends bytes of the event stream to the client (`app.Relayed`)."""

_PING = _encode([{"type": "ping"}])


class _Relay:
    """What relaying one upstream stream takes, however its pieces come (`_pulled` or
    `_written`): translating them, accounting, noticing silences, and the end."""

    def __init__(
        self,
        pipeline: Pipeline,
        stack: AsyncExitStack,
        upstream: Upstream,
        translator: EventSource,
        exchange: Exchange,
        ends: bool,
    ) -> None:
        self.pipeline = pipeline
        self.stack = stack
        self.upstream = upstream
        self.translator = translator
        self.exchange = exchange
        self.ends = ends
        self.clock = pipeline.clock
        self.drain = pipeline.drain
        self.decoder = SSEDecoder()
        self.interval = pipeline.settings.ping_interval
        # An upstream that sends no complete event for this long has stalled, even if it
        # drips a byte now and then (which keeps httpx's own read timeout from firing).
        self.idle = pipeline.settings.read_timeout
        # Silences are noticed by a clock that ticks a few times per interval (`_Ticker`): a
        # timeout around every read would start and cancel a timer for every chunk.
        self.period = min(self.interval, self.idle) / TICKS_PER_INTERVAL
        self.unframed = 0  # bytes received since the last complete upstream event
        self.error: BridgeError | None = None
        self.complete = False
        self.last_sent = self.last_event = 0.0

    def opening(self) -> bytes:
        opening = self.translator.start()
        for event in opening:
            if event["type"] == "message_start":
                # Its input estimate, kept if the client leaves early; not its output (a
                # placeholder 1), which would hide the progress made so far.
                usage = event["message"].get("usage") or {}
                _account(self.exchange, {k: v for k, v in usage.items() if k != "output_tokens"})
        self.last_sent = self.last_event = self.clock()
        return _encode(opening)

    def silence(self) -> BridgeError | bytes | None:
        """At a tick while nothing is being sent: the stall's error, a ping, or nothing."""
        now = self.clock()
        if now - self.last_event >= self.idle:
            return UpstreamError(
                f"upstream {self.upstream.host} sent nothing usable for {self.idle:g} s",
                status=504,
                type="timeout_error",
            )
        if now - self.last_sent >= self.interval:
            return _PING  # Claude Code aborts streams that stay quiet; buffered tool calls count
        return None

    def pinged(self) -> None:
        self.exchange.pings += 1
        self.last_sent = self.clock()

    def take(self, item: object) -> bytes:
        """The client's bytes for one item: upstream bytes, `_END` or a failure (b"": none)."""
        translator, exchange, upstream = self.translator, self.exchange, self.upstream
        if isinstance(item, bytes) and self.drain.expired:
            item = self.drain.error()
        # Filled as translated: if the translation breaks, what came before it still goes.
        events: list[dict[str, Any]] = []
        try:
            if isinstance(item, bytes):  # the usual item first
                if exchange.first_byte is None:
                    exchange.first_byte = self.clock()
                decoded = self.decoder.decode(item)
                self.unframed = 0 if decoded else self.unframed + len(item)
                if decoded:
                    self.last_event = self.clock()
                if self.unframed > MAX_EVENT_BYTES:
                    self.error = UpstreamError(
                        f"upstream {upstream.host} sent an event of more than "
                        f"{MAX_EVENT_BYTES} bytes"
                    )
                    events.extend(translator.fail(self.error))
                else:
                    _feed(translator, decoded, events)
            elif item is _END:
                _feed(translator, self.decoder.flush(), events)
                if not translator.done:
                    events.extend(translator.finish())
            else:
                assert isinstance(item, BridgeError)
                self.error = item
                events.extend(translator.fail(item))
        except Exception as exc:  # whatever the upstream sent, the client gets an ending
            log.exception(
                "translating the upstream stream failed", extra={"request_id": exchange.id}
            )
            self.error = UpstreamError(
                f"upstream {upstream.host} sent a stream that could not be translated "
                f"({type(exc).__name__})",
                status=502,
            )
            # The translator may be left midway: the error event goes out regardless.
            events.extend(translator.fail(self.error) or [self.error.event()])
        if not events:
            return b""
        error = self.error
        for event in events:
            failure = _observe(exchange, event, upstream)
            error = error or failure
        self.error = error
        return _encode(events)

    async def end(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Once nothing more is translated: `stop` reading, close the upstream, account."""
        exchange = self.exchange
        try:
            with anyio.CancelScope(shield=True):  # even when the client went away
                await stop()
                await self.stack.aclose()
        finally:
            if self.ends:
                _account_upstream(exchange, self.translator.upstream_usage)
            else:  # one turn of several: each turn's counts
                websearch.turn_usage(exchange, self.translator.upstream_usage)
            if not self.complete and self.error is None:
                # Closed mid-stream by its client (uvicorn cancels the response when the
                # connection goes): what it got is what counts.
                exchange.cancelled = True
                exchange.output_tokens = exchange.output_so_far
            if self.ends:
                self.pipeline.end(exchange, 200, self.error)


async def _pulled(relay: _Relay, chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, object]:
    """`Pipeline._relay`: a reader task reads ahead of the consumer into an inbox, where the
    ticker's ticks and the drain's error come too."""
    inbox = _Inbox()
    # The reader is stopped through an anyio scope, never `Task.cancel()`: a transport on
    # httpcore (httpx's own, which a user's replay or test may still pass in) shields its
    # connection bookkeeping from the former only, and a plain cancel landing while the
    # reader closes the response at the end of the body loses the connection from that pool
    # for good (under load it runs dry).
    stop_reading = anyio.CancelScope()
    reader = asyncio.create_task(_read_into(chunks, inbox, stop_reading))
    translator = relay.translator
    ticker = _Ticker(inbox.tick, relay.period)
    relay.drain.watch(inbox)
    batch = 0  # bytes translated since the relay last waited

    async def stop() -> None:
        if relay.complete:
            # The body's last bytes follow [DONE]: reading them lets the upstream
            # connection go back to the pool instead of being dropped.
            await asyncio.wait({reader}, timeout=BODY_TAIL_TIMEOUT)
        stop_reading.cancel()
        await asyncio.wait({reader})

    try:
        yield relay.opening()
        # Events of pieces read ahead go out together, in one write once the queue is
        # empty (or `BATCH_BYTES` in): a burst costs one send, not one per piece.
        pending: list[bytes] = []
        while not translator.done:
            if inbox.empty():
                if pending:
                    yield b"".join(pending)
                    pending.clear()
                    relay.last_sent = relay.clock()
                    continue  # more may have come while the client took them
                batch = 0
                item = await inbox.get()
            else:
                item = inbox.get_nowait()
            if item is _TICK:
                if pending:
                    continue  # events are about to go: no ping, nor a stall
                item = relay.silence()
                if item is None:
                    continue
                if item is _PING:
                    yield _PING
                    relay.pinged()
                    continue
            out = relay.take(item)
            if out:
                pending.append(out)
            if isinstance(item, bytes):
                batch += len(item)
                if batch >= BATCH_BYTES:
                    if pending:
                        yield b"".join(pending)
                        pending.clear()
                        relay.last_sent = relay.clock()
                    batch = 0
                    await asyncio.sleep(0)  # one stream's flood must not hold the others
        if pending:
            yield b"".join(pending)
        relay.complete = relay.error is None
    finally:
        ticker.stop()
        relay.drain.unwatch(inbox)
        # Nothing more is translated: what the reader still reads (the body's tail) is
        # dropped, so it never waits for room.
        inbox.close()
        await relay.end(stop)


async def _written(
    relay: _Relay, chunks: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, Write | None]:
    """`Pipeline._relay` for the client's own response (`app.Relayed`), which sends it a
    `Write` after the opening: each upstream piece is then read, translated and written in the
    response's task, one task step per piece where a reader task would make it two. A started
    one that is never sent its `Write` is finalized (the upstream closed) as any abandoned
    generator."""
    pump = _Pump(relay, chunks)
    try:
        write = yield relay.opening()
        assert write is not None, "a written relay is sent its Write after the opening"
        await pump.run(write)
    finally:
        await relay.end(pump.stop)


class _Pump:
    """`_written`'s: reads, translates and writes in one task. While it waits for the
    upstream the ticker acts for it: it pings (a task of its own, rare) or, on a stall, stops
    the read through an anyio scope (see `_pulled` on why anyio's); the drain's error stops
    it alike. While it writes, a silence is the client's, not the upstream's."""

    __slots__ = ("_relay", "_scope", "chunks", "failure", "pinging", "reading", "write")

    def __init__(self, relay: _Relay, chunks: AsyncIterator[bytes]) -> None:
        self._relay = relay
        self.chunks = chunks
        self._scope = anyio.CancelScope()
        self.reading = False  # waiting for the upstream
        self.failure: BridgeError | None = None  # why the read was stopped
        self.pinging: asyncio.Task[None] | None = None
        self.write: Write | None = None

    # -- the drain's view (`drain.Inbox`): woken at expiry while it waits for the upstream

    def empty(self) -> bool:
        return self.reading

    def put_nowait(self, item: object) -> None:
        assert isinstance(item, BridgeError)
        self._stop(item)

    def _stop(self, failure: BridgeError) -> None:
        if self.failure is None:
            self.failure = failure
        self._scope.cancel()

    def tick(self) -> None:
        if not self.reading or self.pinging is not None:
            return
        silence = self._relay.silence()
        if isinstance(silence, BridgeError):
            self._stop(silence)
        elif silence is not None:
            self.pinging = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        assert self.write is not None
        try:
            # Still waiting for the upstream: else the pump woke first, and its write (maybe
            # the last events) must not be followed by this ping.
            if self.reading:
                await self.write(_PING)
                self._relay.pinged()
        finally:
            self.pinging = None

    async def run(self, write: Write) -> None:
        relay = self._relay
        translator = relay.translator
        self.write = write
        ticker = _Ticker(self.tick, relay.period)
        relay.drain.watch(self)
        batch = 0  # bytes translated since the pump last let the others run
        item: object = _END
        try:
            with self._scope:
                try:
                    self.reading = True
                    async for piece in self.chunks:
                        self.reading = False
                        out = relay.take(piece)
                        if out:
                            await write(out)
                            relay.last_sent = relay.clock()
                        if translator.done:
                            break
                        batch += len(piece)
                        if batch >= BATCH_BYTES:
                            batch = 0
                            await asyncio.sleep(0)  # one stream's flood must not hold the others
                        self.reading = True
                except UpstreamError as exc:
                    item = exc
                except Exception as exc:  # whatever it was, the stream must end (with an error)
                    log.exception("reading the upstream stream failed")
                    item = UpstreamError(
                        f"reading the upstream stream failed: {type(exc).__name__}"
                    )
            self.reading = False
            if self._scope.cancelled_caught:
                assert self.failure is not None
                item = self.failure
            if not translator.done:
                out = relay.take(item)
                if out:
                    await write(out)
            relay.complete = relay.error is None
        finally:
            self.reading = False
            ticker.stop()
            relay.drain.unwatch(self)

    async def stop(self) -> None:
        """After the last event: no ping goes after it; the body's tail is read, if the stream
        was complete (the upstream connection then goes back to the pool, not dropped)."""
        pinging = self.pinging
        if pinging is not None:
            pinging.cancel()
            await asyncio.wait({pinging})
        if self._relay.complete:
            with anyio.move_on_after(BODY_TAIL_TIMEOUT):
                try:
                    async for _ in self.chunks:
                        pass
                except Exception:  # a broken tail changes nothing the client got
                    pass


class _Ticker:
    """Calls `tick` every `period` seconds until stopped."""

    def __init__(self, tick: Callable[[], None], period: float) -> None:
        self._on_tick = tick
        self._period = period
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(period, self._tick)

    def _tick(self) -> None:
        self._on_tick()
        self._handle = self._loop.call_later(self._period, self._tick)

    def stop(self) -> None:
        self._handle.cancel()


class _Inbox:
    """What a `_pulled` relay takes, in order: the reader's upstream pieces, then `_END` or an
    error; the ticker's `_TICK`s and the drain's error in between. The reader waits while there are
    `READ_AHEAD` items, or `READ_AHEAD_BYTES` of pieces, in (one piece always goes, however
    big, so nothing can stall).

    A deque and a future for each side: `asyncio.Queue` plus a byte count cost a dozen calls
    (and a `getpid`) on every piece of every stream."""

    __slots__ = ("_getter", "_items", "_loop", "_room", "closed", "size")

    def __init__(self) -> None:
        self._items: deque[object] = deque()
        self._loop = asyncio.get_running_loop()
        self._getter: asyncio.Future[None] | None = None  # the relay, waiting for an item
        self._room: asyncio.Future[None] | None = None  # the reader, waiting for room
        self.size = 0  # bytes of the pieces in
        self.closed = False

    def empty(self) -> bool:
        return not self._items

    def tick(self) -> None:
        """A `_TICK` in, unless it is full (the relay has items to wake it)."""
        if len(self._items) < READ_AHEAD:
            self.put_nowait(_TICK)

    def put_nowait(self, item: object) -> None:
        """`item` in, room or not (not a piece: the bytes in count only what `offer` puts)."""
        self._items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def offer(self, item: object) -> bool:
        """`item` in if there is room now (the usual case: no coroutine per piece)."""
        size = len(item) if isinstance(item, bytes) else 0
        if (
            self.closed
            or len(self._items) >= READ_AHEAD
            or (size and self.size and self.size + size > READ_AHEAD_BYTES)
        ):
            return False
        self.size += size
        self.put_nowait(item)
        return True

    async def put(self, item: object) -> None:
        """`item` in once there is room; dropped once the relay takes no more."""
        while not self.offer(item):
            if self.closed:
                await asyncio.sleep(0)  # a reader dropping a tail must still be stoppable
                return
            room = self._room = self._loop.create_future()
            await room

    def get_nowait(self) -> object:
        item = self._items.popleft()
        if isinstance(item, bytes):
            self.size -= len(item)
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)
        return item

    async def get(self) -> object:
        while not self._items:
            getter = self._getter = self._loop.create_future()
            await getter
        return self.get_nowait()

    def close(self) -> None:
        """The relay takes no more: what is in goes, what comes is dropped, nobody waits."""
        self.closed = True
        self._items.clear()
        self.size = 0
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)


async def _read_into(chunks: AsyncIterator[bytes], inbox: _Inbox, scope: anyio.CancelScope) -> None:
    with scope:
        try:
            async for chunk in chunks:
                if not inbox.offer(chunk):
                    await inbox.put(chunk)
        except UpstreamError as exc:
            await inbox.put(exc)
            return
        except Exception as exc:  # whatever it was, the stream must end (with an error)
            log.exception("reading the upstream stream failed")
            failure = f"reading the upstream stream failed: {type(exc).__name__}"
            await inbox.put(UpstreamError(failure))
            return
        await inbox.put(_END)
