"""The Starlette app: thin routes over the pipeline, Anthropic-shaped answers for everything."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import __version__
from .config import Settings
from .core.errors import BridgeError, InvalidRequest
from .core.ids import new_request_id
from .drain import Drain
from .events import Bus, Exchange
from .journal.writer import Recorder
from .pipeline import Pipeline
from .tokenizer import count_text, encoding
from .upstream import Upstreams

log = logging.getLogger("claude_bridge.app")

# Anthropic's own limit for Messages and count_tokens bodies.
MAX_BODY = 32 * 1024 * 1024
_ERROR_STATUS_TYPES = {404: "not_found_error", 405: "not_found_error", 413: "request_too_large"}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: BridgeError, request_id: str) -> Response:
    headers = {"request-id": request_id, **error.headers}
    return json_response(error.body(request_id), error.status, headers)


class TooLarge(BridgeError):
    status = 413
    type = "request_too_large"


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"request body exceeds {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"request body exceeds {MAX_BODY} bytes")
    return bytes(body)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


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
    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        hosts = {name: u.host for name, u in pipeline.upstreams.named.items()}
        self._health: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "upstream": pipeline.upstreams.default.host,
        }
        if len(hosts) > 1:
            self._health["upstreams"] = hosts
        token = settings.auth_token
        self._token = token.get_secret_value().encode() if token else None

    def authorize(self, request: Request) -> None:
        if self._token is None:
            return
        # Constant time, so the token cannot be guessed byte by byte from response timings.
        if not hmac.compare_digest(client_token(request).encode(), self._token):
            raise Unauthorized("invalid or missing API key for this claude-bridge")

    async def messages(self, request: Request) -> Response:
        exchange = Exchange(id=new_request_id(), route="messages")
        headers = {"request-id": exchange.id}
        self.pipeline.begin(exchange)
        if exchange.trace is not None:
            exchange.trace.client_request(request.method, request.url.path, request.headers.items())
        try:
            self.authorize(request)
            prepared = self.pipeline.prepare(await read_body(request), exchange, request.headers)
            if prepared.request.stream:
                body = await self.pipeline.open_stream(prepared, exchange)
                # Started here, the relay is finalized (closing the upstream) even if the
                # client leaves before the response begins; an unstarted one never would be.
                first = await anext(body)
                return StreamingResponse(
                    _prepend(first, body),
                    media_type="text/event-stream",
                    headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
                )
            message = await self.pipeline.complete(prepared, exchange)
        except BridgeError as error:
            self.pipeline.end(exchange, error.status, error)
            return error_response(error, exchange.id)
        except ClientDisconnect:
            self.pipeline.end(exchange, 499, InvalidRequest("client disconnected"))
            raise
        except Exception:
            # A bug of ours: `server_error` answers; listeners must still see the exchange end.
            self.pipeline.end(exchange, 500, BridgeError("internal proxy error"))
            raise
        self.pipeline.end(exchange, 200)
        return json_response(message, headers=headers)

    async def count_tokens(self, request: Request) -> Response:
        request_id = new_request_id()
        try:
            self.authorize(request)
            counted = await self.pipeline.count_tokens(await read_body(request))
        except BridgeError as error:
            return error_response(error, request_id)
        return json_response(counted, headers={"request-id": request_id})

    async def health(self, request: Request) -> Response:
        return json_response(self._health, headers={"request-id": new_request_id()})


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
) -> Starlette:
    """The proxy as an ASGI app; `transport` lets tests put the upstream in process;
    `recorder` writes every exchange to a journal (`serve --record`). `app.state.drain` ends
    in-flight work at shutdown when the app runs under `drain.run` (proxy/drain.py)."""
    bus = bus or Bus()
    if recorder is not None:
        bus.subscribe(recorder)
        transport = recorder.transport(transport, settings)
    upstreams = Upstreams(settings, transport=transport)
    drain = Drain()
    pipeline = Pipeline(settings, upstreams, bus, encoder=lambda: count_text, drain=drain)
    routes = Routes(settings, pipeline)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loading the BPE ranks takes a fraction of a second: do it before the first request.
        warm = asyncio.create_task(asyncio.to_thread(encoding))
        try:
            yield
        finally:
            await warm
            await upstreams.aclose()
            if recorder is not None:
                recorder.close()

    app = Starlette(
        routes=[
            Route("/v1/messages", routes.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", routes.count_tokens, methods=["POST"]),
            Route("/", routes.health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.drain = drain
    return app
