"""Recording: a bus listener that appends one record per exchange, and the transport that
sees the upstream's bytes.

Like mitmproxy's `Save` addon, but per chunk: the session file is append-only JSON Lines,
flushed after every record; exchanges still in flight when the server stops are written as
`incomplete`. Secrets are redacted and large base64 payloads elided as each line is written.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import httpx
from pydantic import SecretStr

from ..config import ENV_PREFIX, Settings
from ..drain import Drain
from ..events import Exchange
from ..transport import pooled_transport
from .records import (
    REPLAYED_FROM_HEADER,
    ClientRequest,
    ErrorInfo,
    Record,
    Reply,
    Routing,
    Timings,
    Upstream,
    UpstreamRequest,
    UpstreamResponse,
    Usage,
    body_fields,
    elide_base64,
    encode_chunk,
    record_id,
    redact_headers,
    scrub,
)
from .trace import CURRENT_TRACE, Trace, UpstreamTrace

log = logging.getLogger("claude_bridge.journal")


def default_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$CLAUDE_BRIDGE_HOME/journal`, else the XDG state directory's `claude-bridge/journal`."""
    env = os.environ if env is None else env
    home = env.get(f"{ENV_PREFIX}HOME")
    if home:
        return Path(home) / "journal"
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "claude-bridge" / "journal"


def journal_dir(settings: Settings, env: Mapping[str, str] | None = None) -> Path:
    return Path(settings.record_dir) if settings.record_dir else default_dir(env)


def session_path(directory: Path, now: float | None = None) -> Path:
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(time.time() if now is None else now))
    return directory / f"{stamp}-{secrets.token_hex(3)}.jsonl"


def setting_secrets(settings: Settings) -> list[str]:
    """Every value the settings hold as a secret (the upstream key, the client token...)."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
    return found


def build_record(
    trace: Trace,
    exchange: Exchange,
    *,
    id_: str,
    full: bool = False,
    hidden_headers: Sequence[str] = (),
    incomplete: bool = False,
) -> Record:
    """The record of a finished (or, with `incomplete`, abandoned) exchange. Pure."""
    elided = 0

    def elide(value: Any) -> Any:
        nonlocal elided
        if full:
            return value
        value, count = elide_base64(value)
        elided += count
        return value

    body, text = body_fields(trace.client_raw or b"")
    client = ClientRequest(
        method=trace.method,
        path=trace.path or "/v1/messages",
        headers=redact_headers(trace.client_headers, hidden_headers),
        body=elide(body),
        body_text=text,
    )
    upstream = None
    if trace.upstream is not None:
        upstream = _upstream(trace.upstream, elide, hidden_headers)
        upstream.retries = list(trace.upstream_retries)
    reply = _reply(trace, exchange)
    ended = trace.reply_events is None or trace.reply_ended
    state: Literal["complete", "incomplete"] = (
        "incomplete" if incomplete or not ended or _cut_by_shutdown(exchange) else "complete"
    )
    error = None
    if exchange.error_type or exchange.error:
        error = ErrorInfo(type=exchange.error_type or "api_error", message=exchange.error or "")
    headers = dict(client.headers)
    return Record(
        id=id_,
        request_id=exchange.id,
        state=state,
        replayed_from=headers.get(REPLAYED_FROM_HEADER),
        timings=Timings(
            started_at=trace.started_at,
            upstream_first_byte_ms=trace.upstream_first_byte_ms,
            # A JSON answer (an error included) goes out whole when the exchange ends.
            client_first_byte_ms=(
                trace.client_first_byte_ms
                if trace.client_first_byte_ms is not None or reply is None
                else trace.end_ms
            ),
            end_ms=trace.end_ms,
        ),
        client=client,
        routing=Routing(
            client_model=exchange.client_model,
            upstream=trace.upstream_name,
            mode=trace.mode,
            upstream_model=exchange.upstream_model,
            stream=exchange.stream,
            options=trace.options,
            message_id=trace.message_id,
        ),
        upstream=upstream,
        reply=reply,
        usage=Usage(
            input_tokens=exchange.input_tokens,
            cached_tokens=exchange.cached_tokens,
            output_tokens=exchange.output_tokens,
            stop_reason=exchange.stop_reason,
        ),
        status=exchange.status or None,
        error=error,
        notes=list(exchange.notes),
        elided=elided,
    )


def _cut_by_shutdown(exchange: Exchange) -> bool:
    """Ended by the server's drain (still running when the grace period ran out)."""
    drained = Drain().error()
    return exchange.error_type == drained.type and exchange.error == drained.message


def _upstream(
    up: UpstreamTrace, elide: Callable[[Any], Any], hidden_headers: Sequence[str]
) -> Upstream:
    body, text = body_fields(up.body)
    request = UpstreamRequest(
        method=up.method,
        url=up.url,
        headers=redact_headers(up.headers, hidden_headers),
        body=elide(body),
        body_text=text,
    )
    response = None
    if up.status is not None:
        headers = redact_headers(up.response_headers, hidden_headers)
        response = UpstreamResponse(status=up.status, headers=headers)
        if "text/event-stream" in headers.get("content-type", ""):
            response.chunks = [encode_chunk(offset, data) for offset, data in up.chunks]
        else:
            raw = b"".join(data for _, data in up.chunks)
            response.body, response.body_text = body_fields(_decoded(raw, up.response_headers))
    return Upstream(
        request=request,
        response=response,
        error=up.error,
        complete=up.complete,
        sent_ms=up.sent_ms,
        response_ms=up.response_ms,
    )


def _decoded(raw: bytes, headers: list[tuple[str, str]]) -> bytes:
    """The body as the client reads it: without gzip or other content encoding."""
    if not any(name.lower() == "content-encoding" for name, _ in headers):
        return raw
    try:
        return httpx.Response(200, headers=headers, content=raw).content
    except httpx.DecodingError:
        return raw


def _reply(trace: Trace, exchange: Exchange) -> Reply | None:
    status = exchange.status
    if trace.reply_events is not None:
        return Reply(status=status or 200, events=list(trace.reply_events))
    if trace.reply_body is not None:
        return Reply(status=status or 200, body=trace.reply_body)
    if exchange.error is not None and status:
        # Errors are answered by the app from these fields (`BridgeError.body`).
        body = {
            "type": "error",
            "error": {"type": exchange.error_type or "api_error", "message": exchange.error},
            "request_id": exchange.id,
        }
        return Reply(status=status, body=body)
    return None


class Recorder:
    """Subscribe it to the bus and give `create_app` its transport: every `/v1/messages`
    exchange becomes one line of `path`."""

    def __init__(
        self,
        path: Path,
        *,
        full: bool = False,
        secrets: Sequence[str] = (),
        hidden_headers: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.full = full
        self.written = 0
        self._secrets = sorted(set(secrets), key=len, reverse=True)
        self._hidden = tuple(hidden_headers)
        self._clock = clock
        self._wall = wall
        self._file: IO[str] | None = None
        self._in_flight: dict[str, Exchange] = {}
        self._closed = False
        self._last_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Recorder:
        return cls(
            session_path(journal_dir(settings, env)),
            full=settings.record_full,
            secrets=setting_secrets(settings),
            hidden_headers=settings.record_redact,
        )

    # -- the bus listener

    def __call__(self, kind: str, exchange: Exchange) -> None:
        if kind == "start" and exchange.route == "messages" and not self._closed:
            trace = Trace(self._clock, self._wall())
            exchange.trace = trace
            # The upstream call happens in this task (or one it starts): the transport finds
            # the trace here.
            CURRENT_TRACE.set(trace)
            self._in_flight[exchange.id] = exchange
        elif kind == "finish" and exchange.trace is not None:
            if self._in_flight.pop(exchange.id, None) is None:
                return  # already written as incomplete at shutdown
            exchange.trace.finish()
            self._write(exchange.trace, exchange)

    def transport(
        self, inner: httpx.AsyncBaseTransport | None, settings: Settings
    ) -> RecordingTransport:
        return RecordingTransport(inner or pooled_transport(settings))

    def close(self) -> None:
        """Write the exchanges still in flight as `incomplete`, then close the file."""
        if self._closed:
            return
        self._closed = True
        for exchange in list(self._in_flight.values()):
            if exchange.trace is not None:
                exchange.trace.finish()
                self._write(exchange.trace, exchange, incomplete=True)
        self._in_flight.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, trace: Trace, exchange: Exchange, incomplete: bool = False) -> None:
        self._last_id = record_id(trace.started_at, after=self._last_id)
        record = build_record(
            trace,
            exchange,
            id_=self._last_id,
            full=self.full,
            hidden_headers=self._hidden,
            incomplete=incomplete,
        )
        line = scrub(record.line(), self._secrets)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(line + "\n")
        self._file.flush()
        self.written += 1


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes every upstream call to `inner`; when the call belongs to a recorded exchange,
    tells its trace the request, the status and headers, and each raw chunk as it is read."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        trace = CURRENT_TRACE.get()
        if trace is None:
            return await self.inner.handle_async_request(request)
        body = await request.aread()
        trace.upstream_request(
            request.method, str(request.url), request.headers.multi_items(), body
        )
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            trace.upstream_failed(_describe(exc))
            raise
        trace.upstream_response(response.status_code, response.headers.multi_items())
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, trace),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, trace: Trace) -> None:
        self._inner = inner
        self._trace = trace

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._trace.upstream_chunk(chunk)
                yield chunk
        except Exception as exc:
            self._trace.upstream_failed(_describe(exc))
            raise
        self._trace.upstream_done()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
