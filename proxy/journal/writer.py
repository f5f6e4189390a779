"""Recording: a bus listener that appends one record per exchange, and the transport that
sees the upstream's bytes.

Like mitmproxy's `Save` addon, but per chunk: the session file is append-only JSON Lines,
flushed after every record; exchanges still in flight when the server stops are written as
`incomplete`. Secrets are redacted and large base64 payloads elided as each line is written.

Building a record (parsing the bodies, redacting, encoding the chunks) takes milliseconds for a
big exchange: `serve` does it on a writer thread (`Background`), so the event loop only hands
the finished trace over. Its queue is bounded; when it is full the loop waits for the writer
(nothing is dropped) and says so: a warning, and `Recorder.stalls` for the dashboard and the
metrics.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import httpx

from ..config import ENV_PREFIX, ConfigError, Settings
from ..drain import Drain
from ..events import Exchange
from ..files import open_private, private_dir
from ..resilience.failover import failed_over
from ..transport import pooled_transport
from .records import (
    REPLAYED_FROM_HEADER,
    AttemptRecord,
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
    scrub_chunks,
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


def worker_path(run: Path, index: int, life: int = 0) -> Path:
    """Worker `index`'s journal in a run of several (`serve --workers`): the run's file name
    with `-w1`, `-w2`, ... (`replay` reads the directory as one journal). A restarted worker
    gets a new file (`-w1r1`), never the end of one its predecessor may have cut short."""
    return run.with_name(f"{run.stem}-w{index}{f'r{life}' if life else ''}{run.suffix}")


def setting_secrets(settings: Settings) -> list[str]:
    """Every value the settings hold as a secret (`Settings.secrets`)."""
    return settings.secrets()


def build_record(
    trace: Trace,
    exchange: Exchange,
    *,
    id_: str,
    full: bool = False,
    hidden_headers: Sequence[str] = (),
    incomplete: bool = False,
    secrets: Sequence[str] = (),
) -> Record:
    """The record of a finished (or, with `incomplete`, abandoned) exchange. Pure.

    `secrets` are taken out of what the line-wide `scrub` cannot see whole: the upstream's
    raw chunks (a key split between two reads), and transport error text before it is cut."""
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
        upstream = _upstream(trace.upstream, elide, hidden_headers, secrets)
        upstream.retries = list(trace.upstream_retries)
    events = trace.reply_events()
    reply = _reply(trace, exchange, events)
    ended = events is None or events[1]
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
        session_id=exchange.session_id,
        agent_id=exchange.agent_id,
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
            routed_by=exchange.routed_by or None,
            message_id=trace.message_id,
        ),
        upstream=upstream,
        reply=reply,
        usage=Usage(
            input_tokens=exchange.input_tokens,
            cached_tokens=exchange.cached_tokens,
            cache_write_tokens=exchange.cache_write_tokens,
            output_tokens=exchange.output_tokens,
            reasoning_tokens=exchange.reasoning_tokens,
            upstream_cost=exchange.upstream_cost,
            stop_reason=exchange.stop_reason,
        ),
        status=exchange.status or None,
        error=error,
        notes=list(exchange.notes),
        turns=[_upstream(turn, elide, hidden_headers, secrets) for turn in trace.turns],
        attempts=[AttemptRecord(**a.fields()) for a in exchange.attempts]
        if failed_over(exchange.attempts)
        else [],
        elided=elided,
    )


def _cut_by_shutdown(exchange: Exchange) -> bool:
    """Ended by the server's drain (still running when the grace period ran out)."""
    drained = Drain().error()
    return exchange.error_type == drained.type and exchange.error == drained.message


def _upstream(
    up: UpstreamTrace,
    elide: Callable[[Any], Any],
    hidden_headers: Sequence[str],
    secrets: Sequence[str],
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
            chunks = scrub_chunks(up.chunks, secrets)
            response.chunks = [encode_chunk(offset, data) for offset, data in chunks]
        else:
            raw = b"".join(data for _, data in up.chunks)
            response.body, response.body_text = body_fields(_decoded(raw, up.response_headers))
    return Upstream(
        request=request,
        response=response,
        # Scrubbed before it is cut: a cut key would keep its first characters.
        error=scrub(up.error, secrets)[:300] if up.error is not None else None,
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


def _reply(
    trace: Trace, exchange: Exchange, events: tuple[list[tuple[float, dict[str, Any]]], bool] | None
) -> Reply | None:
    status = exchange.status
    if events is not None:
        return Reply(status=status or 200, events=events[0])
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


QUEUE_SIZE = 128
"""Finished exchanges waiting for the writer thread (each holds its bodies and chunks)."""
WARN_EVERY = 60.0
"""Seconds between two warnings that the writer is behind."""

Job = Callable[[], None]


class Writer(Protocol):
    """Where the recorder's jobs (build a record, write its line) run."""

    def submit(self, job: Job) -> float | None:
        """Run `job` now or later, in order; the seconds the caller waited for room (None:
        there was room)."""

    def close(self) -> None:
        """Run what is left; later jobs are not taken."""


class Inline:
    """Writes at once, in the caller's thread: the line is in the file when the call returns
    (tools and tests that read the journal at once)."""

    def submit(self, job: Job) -> float | None:
        """Run `job`; the seconds the caller waited for room (None: there was room)."""
        job()
        return None

    def close(self) -> None:
        pass


class Background:
    """Runs jobs in order on one thread, from a queue of at most `size`. `submit` waits for
    room when it is full: records are never dropped, the caller is slowed instead."""

    def __init__(self, size: int = QUEUE_SIZE, clock: Callable[[], float] = time.monotonic):
        self._queue: queue.Queue[Job | None] = queue.Queue(size)
        self._clock = clock
        self._thread = threading.Thread(target=self._run, name="claude-bridge-journal", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> float | None:
        try:
            self._queue.put_nowait(job)
            return None
        except queue.Full:
            began = self._clock()
            self._queue.put(job)
            return max(self._clock() - began, 0.0)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception:  # a bug of ours: one record lost and said so, the writer lives on
                log.exception("journal record not written")


class Recorder:
    """Subscribe it to the bus and give `create_app` its transport: every `/v1/messages`
    exchange becomes one line of `path`. `writer` builds and writes the records: `Inline`
    (the default) or `Background` (what `serve` uses, off the event loop)."""

    def __init__(
        self,
        path: Path,
        *,
        full: bool = False,
        secrets: Sequence[str] = (),
        hidden_headers: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tighten_dir: bool = False,
        writer: Writer | None = None,
    ) -> None:
        """`tighten_dir`: the directory is the default one, ours: made 0700 if an older
        version left it open to others (a directory the user named only gets a warning)."""
        self.path = path
        self.full = full
        self.written = 0
        self.warnings: list[str] = []
        """What the console should say at start (a journal directory others can list)."""
        self.stalls = 0
        """Times a finished exchange waited for room in the writer's queue."""
        self.stalled = 0.0
        """Seconds the event loop spent waiting for it, in all."""
        self._stall_listeners: list[Callable[[float], None]] = []
        self._warned: float | None = None
        self._tighten = tighten_dir
        self._failing = False
        self._secrets = sorted(set(secrets), key=len, reverse=True)
        self._hidden = tuple(hidden_headers)
        self._clock = clock
        self._wall = wall
        self._writer = writer or Inline()
        self._file: IO[str] | None = None
        self._in_flight: dict[str, Exchange] = {}
        self._closed = False
        self._last_id: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        env: Mapping[str, str] | None = None,
        *,
        path: Path | None = None,
        writer: Writer | None = None,
    ) -> Recorder:
        """A recorder with its session file created (`path`, else a new one in the journal
        directory) writing off the event loop (`writer`, else a `Background` one): a journal
        directory that cannot be written is a `ConfigError` at start, not a failure on every
        request."""
        recorder = cls(
            path or session_path(journal_dir(settings, env)),
            full=settings.record_full,
            secrets=settings.secrets(),
            hidden_headers=settings.record_redact,
            tighten_dir=settings.record_dir is None,
        )
        try:
            recorder._open()
        except OSError as exc:
            raise ConfigError(
                f"setting record_dir: cannot write a journal in {recorder.path.parent} "
                f"({_os_reason(exc)}); choose a writable directory (--record-dir, or record_dir "
                "in the config file)"
            ) from None
        recorder._writer = writer or Background()
        return recorder

    def on_stall(self, listener: Callable[[float], None]) -> None:
        """Call `listener` with the seconds waited each time the writer's queue was full."""
        self._stall_listeners.append(listener)

    # -- the bus listener (on the event loop: hands over, never builds)

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
            self._submit(exchange.trace, exchange, incomplete=False)

    def transport(
        self, inner: httpx.AsyncBaseTransport | None, settings: Settings
    ) -> RecordingTransport:
        return RecordingTransport(inner or pooled_transport(settings))

    def close(self) -> None:
        """Write the exchanges still in flight as `incomplete`, wait for the writer, then close
        the file."""
        if self._closed:
            return
        self._closed = True
        for exchange in list(self._in_flight.values()):
            if exchange.trace is not None:
                exchange.trace.finish()
                self._submit(exchange.trace, exchange, incomplete=True)
        self._in_flight.clear()
        self._writer.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _submit(self, trace: Trace, exchange: Exchange, *, incomplete: bool) -> None:
        # A copy: the live exchange is the pipeline's (an incomplete one still changes).
        seen = copy.copy(exchange)
        seen.notes = list(exchange.notes)
        waited = self._writer.submit(lambda: self._write(trace, seen, incomplete))
        if waited is not None:
            self._stalled(waited)

    def _stalled(self, waited: float) -> None:
        self.stalls += 1
        self.stalled += waited
        now = self._clock()
        if self._warned is None or now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "the journal writer is behind (its queue is full): requests waited %.3f s for "
                "it (%d times so far); nothing is dropped. A slow disk, or too much to record?",
                waited,
                self.stalls,
            )
        for listener in self._stall_listeners:
            listener(waited)

    def _write(self, trace: Trace, exchange: Exchange, incomplete: bool = False) -> None:
        self._last_id = record_id(trace.started_at, after=self._last_id)
        record = build_record(
            trace,
            exchange,
            id_=self._last_id,
            full=self.full,
            hidden_headers=self._hidden,
            incomplete=incomplete,
            secrets=self._secrets,
        )
        line = scrub(record.line(), self._secrets)
        try:
            file = self._open()
            file.write(line + "\n")
            file.flush()
        except OSError as exc:
            # One line per run of failures (a full disk, a deleted directory), no traceback.
            if not self._failing:
                log.warning("cannot write the journal %s: %s", self.path, _os_reason(exc))
            self._failing = True
            return
        self._failing = False
        self.written += 1

    def _open(self) -> IO[str]:
        """The session file, created 0600 in a 0700 directory on first use."""
        if self._file is None:
            warning = private_dir(self.path.parent, tighten=self._tighten)
            if warning is not None:
                self.warnings.append(f"journal directory {warning}")
            self._file = open_private(self.path)
        return self._file


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
    """The failure's first line, whole: it is cut when written, after scrubbing."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc)
