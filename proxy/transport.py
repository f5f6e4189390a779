"""The upstream connection pool: httpx's transport API over HTTP/1.1 on asyncio protocols.

httpx stays the seam (upstream.py's client, the recorder's and the replay's transports, the
tests' transports all speak `httpx.AsyncBaseTransport`); only what sits under it is ours. The
upstreams are HTTP/1.1 servers a pool of kept-alive connections talks to, one request at a
time each, so what is left to do is small: write the request, parse the answer with llhttp
(httptools, which uvicorn already parses the clients' requests with), hand the body on piece
by piece. httpx's own transport (httpcore, h11, anyio) cost ~0.63 ms of CPU per small request
and scanned its whole pool on every request; aiohttp's client under httpx's API, which came
next, ~0.19 ms more per request than this module (`bench/client_stack.py`): its request and
response objects, a task per request to write the body, a timer per piece.

What the transport keeps of httpx's behaviour:

* the request goes out with exactly httpx's headers (none added, no cookies kept, no
  redirects followed);
* bodies come back as sent, still content-encoded: `upstream.py` inflates them in bounded steps
  (`inflate.py`), never httpx's decoders, which inflate a whole piece at once;
* the client's timeouts (`request.extensions["timeout"]`) apply: pool (the wait for a free
  connection: `httpx.PoolTimeout`, as httpcore raises), connect, read (the wait for each piece
  of the answer; for the headers only when the request says `SILENCES_WATCHED`);
* failures are the httpx exceptions httpcore would raise, in the user's words;
* `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` read when the transport is made, as httpx reads
  them when its client is; `NO_PROXY` at the first request to each host: plain HTTP goes to the
  proxy in absolute form, HTTPS through a `CONNECT` tunnel;
* a host's addresses are raced (happy eyeballs), as httpcore and aiohttp race them;
* closing a response before its end closes its connection, so the upstream sees the client
  leave; a response read to the end gives its connection back to the pool;
* a hostile upstream is bounded: answer heads over `MAX_HEAD` bytes are refused, and reading
  stops while `MAX_BUFFERED` bytes wait for the caller.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import socket
import ssl
import urllib.request
from asyncio import staggered
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, cast

import httptools
import httpx

from .config import Settings

# An idle pooled connection is dropped after 4 s, before the servers drop it: uvicorn (vLLM,
# and most Python servers) closes idle connections at 5 s, and a POST sent on a connection the
# server is closing fails unanswered and is not retried. (httpx's 5 s races them.)
KEEPALIVE_EXPIRY = 4.0
# An answer's status line and headers together. h11 (httpx) took 16 KiB; aiohttp 8 KiB a
# line: an upstream that worked with either fits.
MAX_HEAD = 64 * 1024
# Bytes received and not yet taken by the caller before the connection stops reading: the
# caller's pace reaches the upstream through TCP, and a fast upstream cannot fill memory.
MAX_BUFFERED = 256 * 1024
# Bodies up to this size go out in one buffer with the request's head (one send).
JOINED_BODY = 64 * 1024
# A request extension: set, the caller times the body's silences itself, so the read timeout
# covers the wait for the headers only.
SILENCES_WATCHED = "claude_bridge.silences_watched"


def pooled_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The upstream transport: one pool of at most `max_connections` connections. The
    timeouts apply to requests that carry none (httpx's client always sets its own)."""
    return PooledTransport(
        max_connections=settings.max_connections,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        pool_timeout=settings.pool_timeout,
    )


class _Origin(NamedTuple):
    """Where a connection goes: the upstream, and the proxy on the way if there is one."""

    scheme: str
    host: str
    port: int
    proxy: httpx.URL | None


class PooledTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncBaseTransport` over a pool of kept-alive HTTP/1.1 connections."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout: float | None,
        read_timeout: float | None,
        pool_timeout: float | None = None,
        trust_env: bool = True,
    ) -> None:
        self.max_connections = max_connections
        self._default = {"connect": connect_timeout, "read": read_timeout, "pool": pool_timeout}
        # As httpx's default transport: certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR.
        self._ssl: ssl.SSLContext = httpx.create_ssl_context(trust_env=trust_env)
        self._env_proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._proxies: dict[tuple[str, str], httpx.URL | None] = {}
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        # A request holds a slot from before it takes a connection until it gives the
        # connection back (or closes it): the slots queue the requests, the wait bounded by
        # the pool timeout, and a request cancelled while it waits leaves the queue at once.
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the upstream transport is closed")
        timeout = request.extensions.get("timeout") or self._default
        await self._acquire(timeout.get("pool"), request)
        try:
            origin = self._origin(request.url)
            connection = self._take(origin) or await self._connect(origin, timeout, request)
            try:
                head = await connection.exchange(
                    request,
                    self._request_head(request, origin),
                    timeout.get("read"),
                    watched=bool(request.extensions.get(SILENCES_WATCHED)),
                )
            except BaseException:
                self._drop(connection)
                raise
        except BaseException:
            self._slots.release()
            raise
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_Body(connection, self, request),
            extensions=head.extensions,
        )

    async def aclose(self) -> None:
        self._closed = True
        for connection in self._open:
            # In use too: their answers end as cut off. Aborted: a TLS connection's polite
            # close waits for the server's goodbye, past the end of a loop being shut down.
            connection.transport.abort()
        self._open.clear()
        self._idle.clear()

    def release(self, connection: _Connection) -> None:
        """`connection`'s answer is over: back to the pool if it can serve another."""
        self._slots.release()
        if connection.reusable() and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(connection.origin, deque()).append(connection)
        else:
            self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def _acquire(self, pool: float | None, request: httpx.Request) -> None:
        slots = self._slots
        if not slots.locked():
            await slots.acquire()  # returns at once: no timer for the usual case
            return
        try:
            async with asyncio.timeout(pool):
                await slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"all {self.max_connections} upstream connections stayed busy for {pool:g} s",
                request=request,
            ) from None

    def _take(self, origin: _Origin) -> _Connection | None:
        """The newest idle connection to `origin` that is still good, if any."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        expired = asyncio.get_running_loop().time() - KEEPALIVE_EXPIRY
        while idle:
            connection = idle.pop()
            if connection.idle_since > expired and connection.reusable():
                # The rest are older: the oldest go first once they expire.
                while idle and idle[0].idle_since <= expired:
                    self._drop(idle.popleft())
                return connection
            self._drop(connection)
        return None

    def _make_room(self) -> None:
        """Close the oldest idle connection (to any host) when the pool is full."""
        if len(self._open) < self.max_connections:
            return
        oldest = min(
            (idle for idle in self._idle.values() if idle),
            key=lambda idle: idle[0].idle_since,
            default=None,
        )
        if oldest is not None:
            self._drop(oldest.popleft())

    async def _connect(
        self, origin: _Origin, timeout: dict[str, float | None], request: httpx.Request
    ) -> _Connection:
        self._make_room()
        loop = asyncio.get_running_loop()
        proxy = origin.proxy
        tls = origin.scheme == "https"
        if proxy is None:
            host, port = origin.host, origin.port
        else:
            host, port = proxy.host, proxy.port or (443 if proxy.scheme == "https" else 80)
        connection = _Connection(origin)
        first_tls = self._ssl if (tls if proxy is None else proxy.scheme == "https") else None
        try:
            async with asyncio.timeout(timeout.get("connect")):
                await loop.create_connection(
                    lambda: connection,
                    sock=await _tcp(host, port),
                    ssl=first_tls,
                    server_hostname=host if first_tls else None,
                )
                if proxy is not None and tls:
                    await connection.tunnel(request, _proxy_authorization(proxy))
                    upgraded = await loop.start_tls(
                        connection.transport, connection, self._ssl, server_hostname=origin.host
                    )
                    if upgraded is None:  # the proxy hung up during the handshake
                        raise ConnectionResetError("the proxy closed the tunnel")
                    connection.transport = upgraded
        except BaseException as exc:
            connection.close()  # if it got as far as a connection
            error = _connect_error(exc, request, proxied=proxy is not None)
            if error is exc:
                raise
            raise error from exc
        self._open.add(connection)
        return connection

    def _origin(self, url: httpx.URL) -> _Origin:
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"{scheme or 'a URL without a scheme'} is not http or https"
            )
        port = url.port or (443 if scheme == "https" else 80)
        return _Origin(scheme, url.host, port, self._proxy(scheme, url.host))

    def _proxy(self, scheme: str, host: str) -> httpx.URL | None:
        key = (scheme, host)
        if key in self._proxies:
            return self._proxies[key]
        proxy = None
        env = self._env_proxies
        address = env.get(scheme) or env.get("all")
        if address and not urllib.request.proxy_bypass(host):  # NO_PROXY
            proxy = httpx.URL(address if "://" in address else f"http://{address}")
        self._proxies[key] = proxy
        return proxy

    @staticmethod
    def _request_head(request: httpx.Request, origin: _Origin) -> bytes:
        """The request line and headers, as httpx built them."""
        url = request.url
        if origin.proxy is not None and origin.scheme == "http":
            # A plain-HTTP proxy takes the whole URL, and its own credentials.
            target = str(url.copy_with(username=None, password=None)).encode()
            auth = _proxy_authorization(origin.proxy)
            extra = [(b"Proxy-Authorization", auth)] if auth else []
        else:
            target, extra = url.raw_path, []
        lines = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in [*request.headers.raw, *extra]:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


class _Head(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    extensions: dict[str, Any]


class _Connection(asyncio.Protocol):
    """One kept-alive connection: it writes a request, parses the answer as it arrives and
    keeps its body's pieces until the caller takes them."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.idle_since = 0.0
        self.read_timeout: float | None = None  # for the body's pieces
        self._parser = httptools.HttpResponseParser(self)
        self._busy = False  # a request is out and its answer not over
        self._lost: BaseException | bool | None = False  # the exception, None: a clean close
        self._error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._request: httpx.Request | None = None
        # The answer being read.
        self._head_bytes = 0
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: _Head | None = None
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._until_eof = False
        self._keep_alive = False
        # `CONNECT`'s answer, read by hand: llhttp would take a 200 without a length for the
        # start of a body that lasts until the connection closes.
        self._tunnel: bytearray | None = None

    # -- asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel += data
            if b"\r\n\r\n" in self._tunnel or len(self._tunnel) > MAX_HEAD:
                self._wake()
            return
        if not self._busy:  # nothing was asked: a server that talks out of turn
            self.transport.close()
            return
        if self._head is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD and not self._check_head(data):
                return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            head = self._head
            if self._complete or (head is not None and head.status == 101):
                # Bytes after the answer's end that nobody asked for, or `Switching Protocols`
                # (llhttp stops after its head: an answer without a body, which upstream.py
                # refuses): the answer stands, the connection serves nothing more.
                self._complete = True
                self._keep_alive = False
                self.transport.close()
            else:
                self._fail(httpx.RemoteProtocolError(f"the answer is not valid HTTP ({exc})"))
                return
        if self._buffered > MAX_BUFFERED and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc
        if not self._busy or self._complete:
            self._wake()
            return
        if self._head is not None and self._until_eof:
            self._complete = True  # the body was to last until the connection closed
        elif isinstance(exc, OSError):
            self._fail(httpx.ReadError(_os_words(exc)))
        elif self._head is None:
            self._fail(
                httpx.RemoteProtocolError("the server closed the connection without answering")
            )
        else:
            self._fail(httpx.RemoteProtocolError("the answer was cut off before its end"))
        self._wake()

    def pause_writing(self) -> None:
        pass  # a request body is held whole by the caller anyway

    def resume_writing(self) -> None:
        pass

    # -- llhttp's side

    def on_message_begin(self) -> None:
        if self._complete:  # more after the answer's end, unasked: the parser stops here
            raise ValueError("an answer after the answer")

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (`100 Continue`): more follows
            self._reason, self._headers = b"", []
            return
        length = chunked = False
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = True
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        self._until_eof = not (length or chunked) and status not in (101, 204, 304)
        version = self._parser.get_http_version()
        extensions: dict[str, Any] = {
            "http_version": b"HTTP/1.1" if version == "1.1" else f"HTTP/{version}".encode()
        }
        if self._reason:
            extensions["reason_phrase"] = self._reason
        self._head = _Head(status, self._headers, extensions)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._head is not None:
            self._complete = True
            # Asked here: llhttp forgets the answer's `Connection` once past its end.
            self._keep_alive = self._parser.should_keep_alive() and self._head.status != 101

    # -- the pool's side

    async def exchange(
        self, request: httpx.Request, head: bytes, read: float | None, *, watched: bool
    ) -> _Head:
        """Sends `request` (`head` its first lines) and waits for the answer's head."""
        self._start(request)
        write = self.transport.write
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body: httpx said `Transfer-Encoding: chunked`
            write(head)
            async for part in _parts(request.stream):
                if part:
                    write(b"%x\r\n%b\r\n" % (len(part), part))
            write(b"0\r\n\r\n")
        else:
            if len(body) < JOINED_BODY:
                write(head + body)  # one send
            else:  # a big body is not copied into one buffer with its head
                write(head)
                write(body)
        while self._head is None:
            await self._wait(read)
        self.read_timeout = None if watched else read
        return self._head

    async def tunnel(self, request: httpx.Request, auth: bytes | None) -> None:
        """Asks the proxy for a tunnel to the origin; returns once it stands."""
        self._request = request
        self._tunnel = bytearray()
        authority = f"{self.origin.host}:{self.origin.port}".encode()
        lines = [b"CONNECT ", authority, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
        if auth:
            lines += (b"Proxy-Authorization: ", auth, b"\r\n")
        self.transport.write(b"".join([*lines, b"\r\n"]))
        while b"\r\n\r\n" not in self._tunnel and len(self._tunnel) <= MAX_HEAD:
            if self._lost is not False:
                raise ConnectionResetError("the proxy closed the connection")
            await self._wait(None)
        status_line = bytes(self._tunnel.split(b"\r\n", 1)[0])
        self._tunnel = None
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[1].startswith(b"2"):
            raise httpx.ProxyError(
                f"the HTTP proxy refused the tunnel ({status_line.decode('latin-1')[:200]})",
                request=request,
            )

    async def pieces(self) -> AsyncIterator[bytes]:
        """The answer's body, each time all that has arrived, until its end."""
        read = self.read_timeout
        while True:
            pieces = self._pieces
            if pieces:
                self._pieces = []
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    self.transport.resume_reading()
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            elif self._complete:
                return
            else:
                await self._wait(read)

    def finished(self) -> bool:
        return self._complete and not self._pieces

    def reusable(self) -> bool:
        return (
            self._lost is False
            and not self._busy
            and not self.transport.is_closing()
            and self._error is None
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def end(self) -> None:
        """The caller is done with the answer."""
        if self._complete and self._keep_alive:
            self._busy = False
        self._request = None

    # -- inside

    def _start(self, request: httpx.Request) -> None:
        self._busy = True
        self._request = request
        self._head_bytes = 0
        self._reason = b""
        self._headers = []
        self._head = None
        self._pieces = []
        self._buffered = 0
        self._complete = self._until_eof = self._keep_alive = False

    def _check_head(self, data: bytes) -> bool:
        """Whether the head, over `MAX_HEAD` bytes so far, ends within `MAX_HEAD`."""
        before = self._head_bytes - len(data)
        if before < MAX_HEAD:
            # Where the head ends in what just came, if it does within the limit.
            end = data.find(b"\r\n\r\n", 0, MAX_HEAD - before + 4)
            if end >= 0:
                return True
        self._fail(
            httpx.RemoteProtocolError(
                f"the answer is not valid HTTP (its head is over {MAX_HEAD // 1024} KiB)"
            )
        )
        return False

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            error.request = self._request  # type: ignore[assignment]
            self._error = error
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        if timeout is None:
            await waiter
        else:
            timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        self._waiter = None
        if self._error is not None:
            raise self._error

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(httpx.ReadTimeout("nothing received within the read timeout"))


class _Body(httpx.AsyncByteStream):
    """An answer's body as httpx reads it, piece by piece as it arrives."""

    def __init__(
        self, connection: _Connection, pool: PooledTransport, request: httpx.Request
    ) -> None:
        self._connection = connection
        self._pool: PooledTransport | None = pool
        self._request = request

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._connection.pieces()

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        connection = self._connection
        if connection.finished():
            connection.end()  # read to the end: the connection goes back to the pool
        else:
            # Left early: only closing the connection tells the upstream to stop.
            connection.close()
        pool.release(connection)


async def _parts(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterator[bytes]:
    if isinstance(stream, httpx.AsyncByteStream):
        async for part in stream:
            yield part
    else:
        for part in stream:
            yield part


# Happy eyeballs (RFC 8305), as httpcore (through anyio) and aiohttp connect: the next address
# is tried when one has not connected within this many seconds, so a host whose IPv6 address
# is unreachable without a word (a broken IPv6 route) still connects over IPv4 at once.
# uvloop's `create_connection` tries the addresses one after another, each to its end.
HAPPY_EYEBALLS_DELAY = 0.25


async def _tcp(host: str, port: int) -> socket.socket:
    """A connected TCP socket to `host`: its addresses raced, families interleaved."""
    loop = asyncio.get_running_loop()
    found = await _addresses(host, port)
    by_family: dict[int, list[tuple[Any, ...]]] = {}
    for family, kind, proto, _, address in found:
        by_family.setdefault(family, []).append((family, kind, proto, address))
    # IPv6, IPv4, IPv6...: the resolver's first family first.
    queues = list(by_family.values())
    ordered = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]

    async def attempt(family: int, kind: int, proto: int, address: Any) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    if len(ordered) == 1:
        return await attempt(*ordered[0])
    attempts = [functools.partial(attempt, *entry) for entry in ordered]
    sock, _, errors = await staggered.staggered_race(attempts, HAPPY_EYEBALLS_DELAY)
    if sock is None:
        failed = [error for error in errors if error is not None]
        # The first address's failure is the one told: the one the user is most likely to know.
        raise failed[0] if failed else OSError(f"no address of {host} answered")
    return cast(socket.socket, sock)


async def _addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """`host`'s addresses for a TCP connection (`getaddrinfo`'s entries)."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not found:
        raise socket.gaierror(f"{host} has no address")
    return found


def _proxy_authorization(proxy: httpx.URL) -> bytes | None:
    """Basic credentials for the proxy, from its URL's `user:password@`."""
    if not proxy.userinfo:
        return None
    return b"Basic " + base64.b64encode(proxy.userinfo)


def _connect_error(exc: BaseException, request: httpx.Request, *, proxied: bool) -> BaseException:
    """What a failed connect raises: httpx's exception, in the user's words."""
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout("no connection within the connect timeout", request=request)
    if not isinstance(exc, OSError):  # cancelled, or the proxy refused the tunnel
        return exc
    words = _connect_words(exc)
    if proxied and not isinstance(exc, ssl.SSLError):
        return httpx.ProxyError(f"the HTTP proxy cannot be reached ({words})", request=request)
    return httpx.ConnectError(words, request=request)


def _connect_words(exc: OSError) -> str:
    """Why a connection could not be made, in the user's words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate was refused ({exc.verify_message or 'not trusted'})"
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed (is it https on an http port, or the reverse?)"
    if isinstance(exc, socket.gaierror):
        return "its host name does not resolve"
    return _os_words(exc)


def _os_words(exc: BaseException) -> str:
    """`connection refused`, `network is unreachable`: the system's words, lower-cased."""
    number = getattr(exc, "errno", None)
    # asyncio's own text for a refused connection is "Connect call failed ('1.2.3.4', 443)".
    text = os.strerror(number) if number else getattr(exc, "strerror", None)
    text = text or str(exc) or type(exc).__name__
    return text[0].lower() + text[1:]
