"""One exchange: validate, route, translate, call the upstream, translate back; publish events.

The routes stay thin: they hand raw bytes in and get a dict or a byte stream out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError

from . import logs
from .config import Settings, UpstreamSettings
from .core import providers
from .core.context import ReplyContext
from .core.errors import BridgeError, UpstreamError
from .core.ids import new_message_id
from .core.passthrough import PassthroughStream, forward_body, message_from_upstream
from .core.request import OpenAIRequest, RequestOptions, translate_request
from .core.response import translate_response
from .core.routing import Route, route
from .core.sse import SSEDecoder, SSEEvent, encode_event
from .core.stream import EventSource, StreamTranslator
from .core.tokens import Encoder, count_request_tokens
from .core.validation import parse_body, parse_object, validate
from .drain import Drain
from .events import Bus, Exchange, delta_chars
from .models.anthropic import CountTokensRequest, MessagesRequest
from .models.openai import ChatCompletion
from .upstream import Upstream, Upstreams

log = logging.getLogger("claude_bridge.pipeline")

_END = object()
_TICK = object()
# How often per ping interval (or stall timeout, if shorter) a stream checks for silence: a
# ping goes out after between 1 and 1 + 1/TICKS_PER_INTERVAL intervals without an event.
TICKS_PER_INTERVAL = 4
# How long the end of an upstream body may take after its last event before it is cut off.
BODY_TAIL_TIMEOUT = 1.0
# Upstream chunks read ahead of a slow client; beyond this the reader waits (backpressure).
READ_AHEAD = 64
# One upstream SSE event bigger than this is not a chat completion chunk: the stream fails
# rather than buffer without end.
MAX_EVENT_BYTES = 16 * 1024 * 1024


def rough_tokens(text: str) -> int:
    """Four characters a token: free, and close enough for `message_start`'s estimate."""
    return len(text) // 4 + 1


def routed(settings: Settings, client_model: str) -> Route:
    """Which upstream and model a request for `client_model` goes to. `serve` and
    `translate` both ask here, so the offline translation is the served one."""
    return route(
        client_model,
        big_model=settings.big_model,
        small_model=settings.small_model,
        rules=settings.rules(),
    )


def request_options(settings: Settings, endpoint: UpstreamSettings, model: str) -> RequestOptions:
    """How a request for `model` goes to an OpenAI-mode `endpoint`: its provider's rules and
    the switches."""
    return RequestOptions(
        model=model,
        profile=providers.resolve(endpoint.provider, endpoint.base_url, model),
        stream_usage=settings.stream_usage,
        reasoning_effort=settings.reasoning_effort,
        max_tokens_cap=settings.max_tokens_cap,
    )


@dataclass
class Prepared:
    request: MessagesRequest
    upstream: Upstream
    body: dict[str, Any]
    """What goes upstream: the translated request, or the client's with the routed model."""
    headers: dict[str, str]
    ctx: ReplyContext | None
    """For translating the reply; None when the upstream's reply is passed through."""


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        upstreams: Upstreams,
        bus: Bus,
        encoder: Callable[[], Encoder],
        clock: Callable[[], float] = time.monotonic,
        drain: Drain | None = None,
    ) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.bus = bus
        self._encoder = encoder
        self.clock = clock
        self.drain = drain or Drain()

    def begin(self, exchange: Exchange) -> None:
        exchange.started = self.clock()
        self.bus.publish("start", exchange)

    def end(self, exchange: Exchange, status: int, error: BridgeError | None = None) -> None:
        exchange.finished = self.clock()
        exchange.status = status
        if error is not None:
            exchange.error_type, exchange.error = error.type, error.message
        self.bus.publish("finish", exchange)

    # -- messages ------------------------------------------------------------------------

    def prepare(
        self, raw: bytes, exchange: Exchange, client_headers: Mapping[str, str] | None = None
    ) -> Prepared:
        if exchange.trace is not None:
            exchange.trace.client_body(raw)
        logs.log_body(log, "client request", raw)
        data = parse_object(raw)
        request = validate(data, MessagesRequest)
        to = routed(self.settings, request.model)
        upstream = self.upstreams[to.upstream]
        exchange.client_model, exchange.upstream_model = request.model, to.model
        exchange.upstream = upstream.name
        exchange.stream = request.stream
        options: RequestOptions | None = None
        ctx: ReplyContext | None = None
        if upstream.mode == "anthropic":
            body = forward_body(data, to.model)
        else:
            options = request_options(self.settings, upstream.config, to.model)
            body, ctx = self._translate(request, options, exchange)
        logs.log_body(log, "upstream request", body)
        log.debug(
            "routed %s -> %s %s",
            request.model,
            upstream.name,
            to.model,
            extra={"request_id": exchange.id},
        )
        self.bus.publish("routed", exchange)
        if exchange.trace is not None:
            exchange.trace.prepared(upstream.name, upstream.mode, options, ctx)
        headers = upstream.request_headers(client_headers or {})
        return Prepared(request, upstream, body, headers, ctx)

    def _translate(
        self, request: MessagesRequest, options: RequestOptions, exchange: Exchange
    ) -> tuple[dict[str, Any], ReplyContext]:
        """The OpenAI request, and the context its reply is translated with."""
        translated = translate_request(request, options)
        if translated.dropped:
            log.debug(
                "not sent upstream: %s",
                ", ".join(translated.dropped),
                extra={"request_id": exchange.id},
            )
        exchange.notes.extend(translated.dropped)
        return translated.body, reply_context(request, translated, new_message_id())

    async def complete(self, prepared: Prepared, exchange: Exchange) -> dict[str, Any]:
        async with self.drain.guard():
            data = await prepared.upstream.complete(prepared.body, prepared.headers)
        exchange.first_byte = self.clock()
        message = reply_message(data, prepared.ctx)
        _account(exchange, message.get("usage"), message.get("stop_reason"))
        if exchange.trace is not None:
            exchange.trace.client_message(message)
        return message

    async def open_stream(self, prepared: Prepared, exchange: Exchange) -> AsyncIterator[bytes]:
        """Open the upstream stream first, so a refusal still becomes a real HTTP error;
        then the Anthropic event stream, as bytes."""
        upstream = prepared.upstream
        stack = AsyncExitStack()
        async with self.drain.guard():
            response = await stack.enter_async_context(
                upstream.stream(prepared.body, prepared.headers)
            )
        source = event_source(prepared.ctx)
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
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[object] = asyncio.Queue(READ_AHEAD)
        # The reader is stopped through an anyio scope, never `Task.cancel()`: a transport on
        # httpcore (httpx's own, which a user's replay or test may still pass in) shields its
        # connection bookkeeping from the former only, and a plain cancel landing while the
        # reader closes the response at the end of the body loses the connection from that pool
        # for good (under load it runs dry).
        stop_reading = anyio.CancelScope()
        reader = asyncio.create_task(_read_into(chunks, queue, stop_reading))
        decoder = SSEDecoder()
        interval = self.settings.ping_interval
        # An upstream that sends no complete event for this long has stalled, even if it
        # drips a byte now and then (which keeps httpx's own read timeout from firing).
        idle = self.settings.read_timeout
        unframed = 0  # bytes received since the last complete upstream event
        error: BridgeError | None = None
        complete = False
        # Silences are noticed by a clock that ticks into the queue a few times per interval:
        # a timeout around every read would start and cancel a timer for every chunk.
        ticker = _Ticker(queue, min(interval, idle) / TICKS_PER_INTERVAL)
        self.drain.watch(queue)
        try:
            yield _encode(translator.start())
            last_sent = last_event = self.clock()
            while not translator.done:
                item = queue.get_nowait() if not queue.empty() else await queue.get()
                if item is _TICK:
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
                        last_sent = self.clock()
                        continue
                    else:
                        continue
                if self.drain.expired and isinstance(item, bytes):
                    item = self.drain.error()
                if item is _END:
                    events = _feed(translator, decoder.flush())
                    if not translator.done:
                        events.extend(translator.finish())
                elif isinstance(item, BridgeError):
                    error = item
                    events = translator.fail(item)
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
                        events = translator.fail(error)
                    else:
                        events = _feed(translator, decoded)
                if events:
                    for event in events:
                        failure = _observe(exchange, event, upstream)
                        error = error or failure
                    yield _encode(events)
                    last_sent = self.clock()
            complete = error is None
        finally:
            ticker.stop()
            self.drain.unwatch(queue)
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
                self.end(exchange, 200, error)

    # -- count_tokens --------------------------------------------------------------------

    async def count_tokens(self, raw: bytes) -> dict[str, int]:
        request = parse_body(raw, CountTokensRequest)
        encode = self._encoder()
        # BPE over a 50 KB prompt takes milliseconds: keep it off the event loop.
        total = await asyncio.to_thread(count_request_tokens, request, encode)
        return {"input_tokens": total}


def reply_context(
    request: MessagesRequest, translated: OpenAIRequest, message_id: str
) -> ReplyContext:
    """What translating the reply to `request` needs; `replay diff` passes the recorded id."""
    return ReplyContext(
        model=request.model,
        message_id=message_id,
        tool_names=translated.tool_names,
        stop_sequences=tuple(request.stop_sequences or ()),
        input_estimate=count_request_tokens(request, rough_tokens),
    )


def reply_message(data: Any, ctx: ReplyContext | None) -> dict[str, Any]:
    """An upstream JSON answer -> the client's message: translated with `ctx`, or as is when
    the exchange is passed through (no `ctx`)."""
    if ctx is None:
        return message_from_upstream(data)
    return message_from_completion(data, ctx)


def event_source(ctx: ReplyContext | None) -> EventSource:
    """What turns the upstream's stream into the client's: translated, or passed through."""
    return PassthroughStream() if ctx is None else StreamTranslator(ctx)


def message_from_completion(data: Any, ctx: ReplyContext) -> dict[str, Any]:
    """An upstream JSON answer -> the Anthropic message; `replay diff` re-runs it offline."""
    try:
        completion = ChatCompletion.model_validate(data)
    except ValidationError:
        raise UpstreamError("upstream answer is not a chat completion", status=500) from None
    text = sum(len(c.message.content or "") for c in completion.choices if c.message)
    return translate_response(completion, ctx, output_estimate=text // 4)


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
    if isinstance(stop, str):
        exchange.stop_reason = stop


_USAGE_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("cache_read_input_tokens", "cached_tokens"),
    ("output_tokens", "output_tokens"),
)


def _feed(translator: EventSource, events: list[SSEEvent]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sse in events:
        if translator.done:
            break
        out.extend(translator.feed_data(sse.data))
    return out


def _encode(events: list[dict[str, Any]]) -> bytes:
    return b"".join(encode_event(event) for event in events)


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


async def _read_into(
    chunks: AsyncIterator[bytes], queue: asyncio.Queue[object], scope: anyio.CancelScope
) -> None:
    with scope:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
        except UpstreamError as exc:
            await queue.put(exc)
            return
        except Exception as exc:  # whatever it was, the stream must end (with an error)
            log.exception("reading the upstream stream failed")
            failure = f"reading the upstream stream failed: {type(exc).__name__}"
            await queue.put(UpstreamError(failure))
            return
        await queue.put(_END)
