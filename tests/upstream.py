"""A real OpenAI-compatible HTTP/1.1 server for end-to-end tests, on loopback in its own thread.

Tests script what it answers, one reply per request, and read back what it received::

    upstream.reply(JSONReply(completion("Hi!")))
    upstream.reply(SSEReply(text_stream(["Hel", "lo"]), delay=0.05))
    upstream.reply(SSEReply([chunk({"content": "Hi"})], end="stall"))  # then silence
    upstream.reply(lambda request: JSONReply(completion(user_text(request))))
    ...
    upstream.requests[-1].json["model"]

It speaks just enough HTTP/1.1 for httpx: keep-alive, `Content-Length` and chunked request
bodies, chunked responses written one SSE chunk per HTTP chunk as soon as they are scripted (so
a client sees them arrive one by one). It notices a client that hangs up in the middle of an
answer (`disconnected`, `RecordedRequest.disconnected`): the proof that a proxy cancels upstream
work when its own client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal

# -- scripted replies --------------------------------------------------------------------


@dataclass(frozen=True)
class JSONReply:
    """A JSON body (anything `json.dumps` takes) with a status and extra headers."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawReply:
    """Bytes as they are: an HTML error page, a body that is not JSON..."""

    body: bytes | str
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pause:
    """Inside `SSEReply.chunks`: wait this long before the next chunk."""

    seconds: float


@dataclass(frozen=True)
class SSEReply:
    """A streamed answer: each item of `chunks` is written as one HTTP chunk.

    `delay` is waited before every chunk but the first; `Pause` items add more. `end` says how the
    answer finishes after the last chunk:

    * ``"done"``: the chunked body ends properly (whether a `data: [DONE]` was sent is up to
      `chunks`);
    * ``"close"``: the connection is closed mid-body, with no terminating chunk (a cut stream);
    * ``"stall"``: nothing more is sent, the connection stays open until the client hangs up (or
      the server is reset or stopped).
    """

    chunks: Sequence[bytes | str | Pause]
    delay: float = 0.0
    end: Literal["done", "close", "stall"] = "done"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hangup:
    """Close the connection without answering at all."""


@dataclass(frozen=True)
class Silence:
    """Answer nothing, not even a status line: the connection stays open until the client
    hangs up (or the server is reset or stopped). An upstream stuck before its headers."""


Reply = JSONReply | RawReply | SSEReply | Hangup | Silence


@dataclass
class RecordedRequest:
    method: str
    target: str
    """The request target as sent: path and query."""
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes
    received_at: float = field(default_factory=time.monotonic)
    disconnected: threading.Event = field(default_factory=threading.Event)
    """Set when the client hung up before the answer to this request was complete."""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def json(self) -> Any:
        """The parsed body; None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


Script = Reply | Callable[[RecordedRequest], Reply]


# -- OpenAI-shaped bodies ----------------------------------------------------------------

DONE = "data: [DONE]\n\n"


def openai_usage(
    prompt: int = 12,
    completion: int = 5,
    cached: int = 0,
    *,
    cache_write: int = 0,
    reasoning: int = 0,
    cost: float | None = None,
) -> dict[str, Any]:
    """OpenAI's usage object; `cache_write` and `cost` as OpenRouter adds them."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }
    if cache_write:
        usage["prompt_tokens_details"]["cache_write_tokens"] = cache_write
    if cost is not None:
        usage["cost"] = cost
    return usage


def tool_call(call_id: str, name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning_content: str | None = None,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    model: str = "upstream-model",
) -> dict[str, Any]:
    """A non-streaming chat completion, shaped like OpenAI's."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    return {
        "id": "chatcmpl-test123",
        "object": "chat.completion",
        "created": 1782321890,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage if usage is not None else openai_usage(),
    }


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> str:
    """One streamed chat.completion.chunk as an SSE `data:` event; `choices=False` gives the
    `choices: []` chunk that carries only usage."""
    body: dict[str, Any] = {
        "id": "chatcmpl-test123",
        "object": "chat.completion.chunk",
        "created": 1782321890,
        "model": "upstream-model",
        "choices": [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
        if choices
        else [],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def text_stream(
    parts: Iterable[str],
    *,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    usage_chunk: bool = True,
) -> list[str]:
    """A plain text answer as OpenAI streams it: role chunk, content chunks, finish chunk,
    then (with `usage_chunk`) a separate `choices: []` usage chunk, then `[DONE]`."""
    final_usage = usage if usage is not None else openai_usage()
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks.extend(chunk({"content": part}) for part in parts)
    if usage_chunk:
        chunks.append(chunk(finish_reason=finish_reason))
        chunks.append(chunk(usage=final_usage, choices=False))
    else:
        chunks.append(chunk(finish_reason=finish_reason, usage=final_usage))
    chunks.append(DONE)
    return chunks


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None) -> Any:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def rate_limited(
    retry_after: str | None = None, *, type: str = "rate_limit_error", code: str | None = None
) -> JSONReply:
    """A 429 for too many requests, with the `retry-after` header when given."""
    headers = {"retry-after": retry_after} if retry_after else {}
    return JSONReply(error_body("Rate limit reached", type, code), 429, headers)


def user_text(request: RecordedRequest) -> str:
    """The text of the last user message the upstream received."""
    for message in reversed(request.json["messages"]):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    raise AssertionError("no user message upstream")


# -- the server --------------------------------------------------------------------------


class FakeUpstream:
    """An OpenAI-compatible server on 127.0.0.1, a free port, in a thread with its own loop.

    Thread-safe from the test's side: `reply`, `always`, `requests`, `reset`, `wait_*`.
    """

    def __init__(self) -> None:
        self.port = 0
        self.disconnected = threading.Event()
        """Set when any client hung up before an answer was complete."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._script: deque[Script] = deque()
        self._fallback: Script | None = None
        self._requests: list[RecordedRequest] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self.accepted = 0
        """Connections accepted since start: tells whether clients reuse pooled connections."""
        self._startup_error: BaseException | None = None
        self.errors: list[Exception] = []
        """Exceptions raised by callable replies."""
        self.models: list[str] = []
        """What `GET .../models` lists."""
        self.listings = 0
        """`GET .../models` requests answered."""
        self.listing: Reply | None = None
        """The answer to `GET .../models` instead of `models` (a 401 for a refused key)."""

    # -- lifecycle

    def start(self) -> FakeUpstream:
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        if self._startup_error is not None:
            raise RuntimeError("fake upstream did not start") from self._startup_error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("fake upstream thread did not stop")
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting

    def reply(self, *replies: Script) -> None:
        """Queue replies, used one per request in order. A callable gets the request."""
        with self._lock:
            self._script.extend(replies)

    def always(self, reply: Script | None) -> None:
        """The reply for requests that find the queue empty (None: answer 599 and complain)."""
        with self._lock:
            self._fallback = reply

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("the upstream received no request")
            return self._requests[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(
                    f"upstream got {len(self._requests)} requests, expected {count}"
                )
            return list(self._requests)

    def wait_disconnect(self, timeout: float = 5.0) -> bool:
        return self.disconnected.wait(timeout)

    def reset(self) -> None:
        """Forget script, fallback and requests; hang up on answers still in progress."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._hang_up_all(), loop)
            future.result(10)
        with self._lock:
            self._script.clear()
            self._fallback = None
            self._requests.clear()
            self.models = []
            self.listings = 0
            self.listing = None
        self.errors.clear()
        self.disconnected.clear()

    # -- inside the server thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() when it happens before readiness
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await self._hang_up_all(busy_only=False)
            await server.wait_closed()

    async def _hang_up_all(self, busy_only: bool = True) -> None:
        targets = [c for c in self._connections if c.busy or not busy_only]
        for connection in targets:
            connection.transport_close()
        for connection in targets:
            await connection.finished()

    def _record(self, request: RecordedRequest) -> Script:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            if self._script:
                return self._script.popleft()
            if self._fallback is not None:
                return self._fallback
        return JSONReply(
            error_body("fake upstream: no reply scripted for this request", "test_error"),
            status=599,
        )

    def _reply_for(self, request: RecordedRequest) -> Reply:
        if request.method == "GET" and request.path.endswith("/models"):
            # The model listing claude-bridge fetches in the background: answered apart, so
            # that it never takes a scripted reply or shows among `requests`.
            with self._lock:
                self.listings += 1
                listed = [{"id": name, "object": "model"} for name in self.models]
                if self.listing is not None:
                    return self.listing
            return JSONReply({"object": "list", "data": listed})
        script = self._record(request)
        if not callable(script):
            return script
        try:
            return script(request)
        except Exception as exc:  # the test sees it in `errors` and as a 599 through the proxy
            self.errors.append(exc)
            return JSONReply(
                error_body(f"fake upstream: scripted reply raised {exc!r}", "test_error"),
                status=599,
            )

    def _note_disconnect(self, request: RecordedRequest) -> None:
        request.disconnected.set()
        self.disconnected.set()


class _Connection(asyncio.Protocol):
    """One client connection: reads requests in a loop, writes the scripted answers."""

    def __init__(self, server: FakeUpstream) -> None:
        self.server = server
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self._reader = asyncio.StreamReader()
        self._lost = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server._connections.add(self)
        self.server.accepted += 1
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._reader.feed_data(data)

    def eof_received(self) -> bool:
        self._reader.feed_eof()
        return False  # close our side too: a client that half-closes is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._writable.set()
        if not self._reader.at_eof():
            self._reader.feed_eof()
        self.server._connections.discard(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- helpers

    def transport_close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def finished(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def gone(self) -> bool:
        return self._lost.is_set() or self.transport is None or self.transport.is_closing()

    async def _write(self, data: bytes) -> bool:
        """Write and wait for the buffer to drain; False when the client is gone."""
        if self.gone:
            return False
        assert self.transport is not None
        self.transport.write(data)
        await self._writable.wait()
        return not self._lost.is_set()

    async def _wait_lost(self, timeout: float | None) -> bool:
        """Sleep `timeout` seconds (None: forever) unless the client goes away first."""
        if timeout is not None and timeout <= 0:
            return self.gone
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), timeout)
        return self._lost.is_set()

    # -- HTTP

    async def _serve(self) -> None:
        try:
            while not self.gone:
                request = await self._read_request()
                if request is None:
                    break
                self.busy = True
                reply = self.server._reply_for(request)
                keep = await self._answer(request, reply)
                self.busy = False
                if not keep or request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.busy = False
            self.transport_close()

    async def _read_request(self) -> RecordedRequest | None:
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed an idle keep-alive connection
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            body = await self._reader.readexactly(int(headers.get("content-length") or 0))
        return RecordedRequest(method=method, target=target, headers=headers, body=body)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers, then the blank line
                while await self._reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return bytes(body)
            body += await self._reader.readexactly(size)
            await self._reader.readexactly(2)

    async def _answer(self, request: RecordedRequest, reply: Reply) -> bool:
        """Write the reply; whether the connection can serve another request."""
        if isinstance(reply, Hangup):
            self.transport_close()
            return False
        if isinstance(reply, Silence):
            await self._wait_lost(None)
            self.server._note_disconnect(request)
            return False
        if isinstance(reply, SSEReply):
            return await self._answer_stream(request, reply)
        if isinstance(reply, JSONReply):
            body = json.dumps(reply.body).encode()
            content_type = "application/json"
        else:
            raw = reply.body
            body = raw.encode() if isinstance(raw, str) else raw
            content_type = reply.content_type
        head = _head(
            reply.status,
            {"content-type": content_type, "content-length": str(len(body)), **reply.headers},
        )
        if not await self._write(head + body):
            self.server._note_disconnect(request)
            return False
        return True

    async def _answer_stream(self, request: RecordedRequest, reply: SSEReply) -> bool:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            **reply.headers,
        }
        if not await self._write(_head(reply.status, headers)):
            self.server._note_disconnect(request)
            return False
        first = True
        for item in reply.chunks:
            if isinstance(item, Pause):
                if await self._wait_lost(item.seconds):
                    self.server._note_disconnect(request)
                    return False
                continue
            if not first and await self._wait_lost(reply.delay):
                self.server._note_disconnect(request)
                return False
            first = False
            data = item.encode() if isinstance(item, str) else item
            if data and not await self._write(b"%x\r\n%s\r\n" % (len(data), data)):
                self.server._note_disconnect(request)
                return False
        if reply.end == "close":
            self.transport_close()
            return False
        if reply.end == "stall":
            await self._wait_lost(None)
            self.server._note_disconnect(request)
            return False
        if not await self._write(b"0\r\n\r\n"):
            self.server._note_disconnect(request)
            return False
        return True


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
