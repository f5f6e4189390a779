"""The Starlette app: thin routes over the pipeline, Anthropic-shaped answers for everything."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import __version__, heap
from .config import Settings
from .core.errors import BridgeError, InvalidRequest
from .core.ids import new_request_id
from .disconnect import Departures
from .drain import Drain
from .events import Bus, Exchange
from .guard import Guard
from .journal.writer import Recorder
from .metrics import Metrics
from .models_api import ModelsApi, hello
from .pipeline import Pipeline
from .pricing import routed_models
from .resilience.health import Health
from .tokenizer import count_text, encoding
from .upstream import Upstreams

log = logging.getLogger("claude_bridge.app")

# Anthropic's own limit for Messages and count_tokens bodies.
MAX_BODY = 32 * 1024 * 1024
_ERROR_STATUS_TYPES = {404: "not_found_error", 405: "not_found_error", 413: "request_too_large"}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json(data), status_code=status, headers=headers, media_type="application/json")


def _json(data: Any) -> bytes:
    """Compact UTF-8 JSON: orjson writes what Python's encoder does, ten times faster; what it
    refuses (an integer past 64 bits, a lone surrogate) is Python's to write or to fail on."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def error_response(error: BridgeError, request_id: str) -> Response:
    headers = {"request-id": request_id, **error.headers}
    if error.status >= 500:
        # After an unhandled error uvicorn drops the connection once the answer is sent; said
        # up front, the client opens a new one instead of losing its next request on a dead one.
        headers["connection"] = "close"
    return json_response(error.body(request_id), error.status, headers)


def gone() -> Response:
    """The answer to a client that disconnected: nobody reads it (the server drops it), but a
    route that returns one is not logged as failing."""
    return Response(status_code=499)


class TooLarge(BridgeError):
    status = 413
    type = "request_too_large"


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"request body exceeds {MAX_BODY} bytes")
    # Pieces joined once at the end (a body in one piece is not copied at all): a `bytearray`
    # grown, then copied, cost ~25 µs more for a 480 KB Claude Code session body.
    pieces: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge(f"request body exceeds {MAX_BODY} bytes")
        if chunk:
            pieces.append(chunk)
    return b"".join(pieces)


class Relayed(StreamingResponse):
    """An event stream whose first piece is taken already (the relay is started before the
    response). The stream is sent the `write` below: a plain stream's relay writes the rest
    with it itself (`Pipeline.open_stream`); any other stream ignores it and gives its pieces,
    which go straight to `send`."""

    def __init__(
        self, first: bytes, rest: AsyncGenerator[bytes, Any], headers: dict[str, str]
    ) -> None:
        super().__init__(rest, media_type="text/event-stream", headers=headers)
        self.first = first
        self.rest = rest

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.first, "more_body": True})

        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        rest = self.rest
        with contextlib.suppress(StopAsyncIteration):
            data = await rest.asend(write)
            while True:
                await write(data)
                data = await anext(rest)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A client that leaves cancels the stream at once (its relay closes the upstream).
        # Starlette's own watch, an anyio task group around two tasks, costs ~75 us a stream;
        # one listening task that cancels an anyio scope does the same (anyio's rather than
        # `Task.cancel()`: see `Departures`).
        stream = anyio.CancelScope()
        listener = asyncio.get_running_loop().create_task(_departure(receive, stream))
        try:
            with stream:
                await self.stream_response(send)
        finally:
            listener.cancel()


async def _departure(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel `scope` once the client has left."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class Unauthorized(BridgeError):
    status = 401
    type = "authentication_error"


def client_token(request: Request) -> str:
    """The key the client presented: the SDKs send `x-api-key` or `Authorization: Bearer`."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Routes:
    def __init__(
        self, settings: Settings, pipeline: Pipeline, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.departures = Departures()
        self.metrics = metrics
        # `GET /` tells anyone only that this is claude-bridge and its version; where the key
        # goes is for clients holding the auth token, and nobody's when none is set.
        self._health: dict[str, Any] = {"status": "ok", "version": __version__}
        hosts = {name: u.host for name, u in pipeline.upstreams.named.items()}
        self._health_detail = {**self._health, "upstream": pipeline.upstreams.default.host}
        if len(hosts) > 1:
            self._health_detail["upstreams"] = hosts
        token = settings.auth_token
        self._token = token.get_secret_value().encode() if token else None
        # How `code` knows a running serve is its configuration's (Settings.fingerprint): for
        # the token's holders, or anyone when there is no token (anyone may use it then).
        self._health_detail["config"] = settings.fingerprint()
        if token is None:
            self._health["config"] = self._health_detail["config"]

    def holds_token(self, request: Request) -> bool:
        """Whether the client presented the auth token (none is set: nobody holds it)."""
        # Constant time, so the token cannot be guessed byte by byte from response timings.
        return self._token is not None and hmac.compare_digest(
            client_token(request).encode(), self._token
        )

    def authorize(self, request: Request) -> None:
        if self._token is None:
            return
        if not self.holds_token(request):
            raise Unauthorized("invalid or missing API key for this claude-bridge")

    async def messages(self, request: Request) -> Response:
        exchange = Exchange(id=new_request_id(), route="messages")
        headers = {"request-id": exchange.id}
        self.pipeline.begin(exchange)
        if exchange.trace is not None:
            exchange.trace.client_request(request.method, request.url.path, request.headers.items())
        try:
            self.authorize(request)
            raw = await read_body(request)
            # Until the response begins (then Starlette listens), a client that leaves cancels
            # the work: in a worker, in the pool's queue, or at the upstream.
            async with self.departures.watch(request.receive):
                prepared = await self.pipeline.prepare(raw, exchange, request.headers)
                if prepared.stream:
                    body = await self.pipeline.open_stream(prepared, exchange)
                    # Started here, the relay is finalized (closing the upstream) even if the
                    # client leaves before the response begins; an unstarted one never would be.
                    first = await anext(body)
                    return Relayed(
                        first,
                        body,
                        {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
                    )
                message = await self.pipeline.complete(prepared, exchange)
        except BridgeError as error:
            self.pipeline.end(exchange, error.status, error)
            return error_response(error, exchange.id)
        except ClientDisconnect:
            self.pipeline.end(exchange, 499, InvalidRequest("client disconnected"))
            return gone()
        except Exception:
            # A bug of ours: `server_error` answers; listeners must still see the exchange end.
            self.pipeline.end(exchange, 500, BridgeError("internal proxy error"))
            raise
        self.pipeline.end(exchange, 200)
        return json_response(message, headers=headers)

    async def count_tokens(self, request: Request) -> Response:
        response = await self._count_tokens(request)
        if self.metrics is not None:  # no exchange and no bus event: counted here
            self.metrics.count_tokens(response.status_code)
        return response

    async def _count_tokens(self, request: Request) -> Response:
        request_id = new_request_id()
        try:
            self.authorize(request)
            raw = await read_body(request)
            async with self.departures.watch(request.receive):  # a big body's worker stops
                counted = await self.pipeline.count_tokens(raw)
        except BridgeError as error:
            return error_response(error, request_id)
        except ClientDisconnect:
            return gone()
        return json_response(counted, headers={"request-id": request_id})

    async def scrape(self, request: Request) -> Response:
        """`GET /metrics`: Prometheus' text format, behind the auth token when one is set."""
        assert self.metrics is not None
        try:
            self.authorize(request)
        except BridgeError as error:
            return error_response(error, new_request_id())
        body, content_type = self.metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    async def health(self, request: Request) -> Response:
        health = self._health_detail if self.holds_token(request) else self._health
        return json_response(health, headers={"request-id": new_request_id()})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error_type = _ERROR_STATUS_TYPES.get(exc.status_code, "invalid_request_error")
    message = (
        f"{request.method} {request.url.path} is not an endpoint of this API"
        if exc.status_code in (404, 405)
        else str(exc.detail)
    )
    status = 404 if exc.status_code == 405 else exc.status_code
    return error_response(BridgeError(message, status=status, type=error_type), new_request_id())


async def server_error(request: Request, exc: Exception) -> Response:
    # Whatever went wrong, the client gets an Anthropic body; the traceback goes to the log.
    log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(BridgeError("internal proxy error", status=500), new_request_id())


def create_app(
    settings: Settings,
    *,
    bus: Bus | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    recorder: Recorder | None = None,
    health: Health | None = None,
) -> Starlette:
    """The proxy as an ASGI app; `transport` lets tests put the upstream in process;
    `recorder` writes every exchange to a journal (`serve --record`); `health`: the upstreams'
    breakers and key pools, on a test's clock (`app.state.health`, for the dashboard).
    `app.state.drain` ends in-flight work at shutdown when the app runs under `drain.run`
    (proxy/drain.py)."""
    bus = bus or Bus()
    searches = getattr(transport, "searches", None)  # a journal's, with its upstream answers
    if recorder is not None:
        bus.subscribe(recorder)
        transport = recorder.transport(transport, settings)
    upstreams = Upstreams(settings, transport=transport)
    drain = Drain()
    pipeline = Pipeline(
        settings, upstreams, bus, encoder=lambda: count_text, drain=drain, health=health
    )
    if searches is not None:
        pipeline.searcher.replay(searches)
    metrics = Metrics() if settings.metrics else None
    if metrics is not None:
        bus.subscribe(metrics, Metrics.KINDS)
        if recorder is not None:
            recorder.on_stall(metrics.journal_stalled)
    routes = Routes(settings, pipeline, metrics)
    models = ModelsApi(
        settings,
        pipeline.windows,
        upstreams,
        authorize=routes.authorize,
        render=error_response,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loading the BPE ranks takes a fraction of a second: do it before the first request.
        warm = asyncio.create_task(asyncio.to_thread(encoding))
        # The price table takes as long; looked up first in a request, it would stall the loop.
        prices = asyncio.create_task(
            asyncio.to_thread(pipeline.pricing.warm, routed_models(settings))
        )
        # anyio loads its asyncio backend at the first cancel scope: without this, the first
        # request would wait for that import (tens of milliseconds, most of what it cost).
        with anyio.CancelScope():
            pass
        heap.settle()  # what start-up made stays out of every later collection (proxy/heap.py)
        try:
            yield
        finally:
            await warm
            await prices
            await models.aclose()
            await upstreams.aclose()
            await pipeline.aclose()
            if recorder is not None:
                recorder.close()

    app = Starlette(
        routes=[
            Route("/v1/messages", routes.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", routes.count_tokens, methods=["POST"]),
            Route("/", routes.health, methods=["GET"]),  # and HEAD, as every GET route
            Route("/v1/models", models.list, methods=["GET"]),
            Route("/v1/models/{model_id:path}", models.retrieve, methods=["GET"]),
            Route("/api/hello", hello, methods=["GET"]),  # Claude Code's warm-up HEAD
            *([Route("/metrics", routes.scrape, methods=["GET"])] if metrics else []),
        ],
        # First thing every request meets, before routing, auth or the body (proxy/guard.py).
        middleware=[Middleware(Guard, settings=settings, render=error_response)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.drain = drain
    app.state.health = pipeline.health
    return app
