"""The upstream connection pool: httpx's API over aiohttp's pooled HTTP/1.1 client.

httpx stays the seam (upstream.py's client, the recorder's and the replay's transports, the
tests' transports all speak `httpx.AsyncBaseTransport`); only what sits under it changes. httpx's
default transport (httpcore, h11, anyio) costs ~0.63 ms of CPU per small request against
~0.31 ms for httpx over this one (bench/client_stack.py), and its pool scans every connection
on every request and release, which goes CPU-bound with a thousand waiting streams. aiohttp
parses HTTP in C and queues waiters per host.

What the transport keeps of httpx's behaviour:

* the request goes out with exactly httpx's headers (aiohttp adds none of its own, keeps no
  cookies, follows no redirects);
* bodies come back as sent, still content-encoded: `upstream.py` inflates them in bounded steps
  (`inflate.py`), never httpx's decoders, which inflate a whole piece at once;
* the client's timeouts (`request.extensions["timeout"]`) apply: pool (the wait for a free
  connection: `httpx.PoolTimeout`, as httpcore raises), connect, read (the wait for each piece
  of the answer; for the headers only when the request says `SILENCES_WATCHED`);
* aiohttp's failures become the httpx exceptions httpcore would have raised;
* `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` read when the transport is made, as httpx reads
  them when its client is; `NO_PROXY` at the first request to each host;
* closing a response before its end closes its connection, so the upstream sees the client
  leave; a response read to the end gives its connection back to the pool.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp
import httpx
from yarl import URL

from .config import Settings

# As httpx: an idle pooled connection is dropped after 5 s, before most servers drop it (a
# POST on a connection the server is closing fails and is not retried).
KEEPALIVE_EXPIRY = 5.0
# aiohttp's default is 8 KiB per header line; h11 (httpx) takes up to 16 KiB of headers, and
# an upstream that worked before must not start failing on a long header.
MAX_HEADER_LINE = 16 * 1024
# Headers aiohttp would add when absent: httpx already sent the ones it wants.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# A request extension: set, the caller times the body's silences itself, so the read timeout
# covers the wait for the headers only. aiohttp re-arms its read timer on every piece it
# receives otherwise (a timer cancelled and made again per streamed chunk).
SILENCES_WATCHED = "claude_bridge.silences_watched"


def pooled_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The upstream transport: one pool of at most `max_connections` connections. The
    timeouts apply to requests that carry none (httpx's client always sets its own)."""
    return AiohttpTransport(
        max_connections=settings.max_connections,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        pool_timeout=settings.pool_timeout,
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncBaseTransport` over one `aiohttp.ClientSession`.

    The session is made on the first request: aiohttp binds it to the running event loop,
    and the transport is built before the server's loop runs."""

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
        # Read once, as httpx reads them when its client is built. aiohttp's own `trust_env`
        # reads them again on every request, in a thread, and costs more than the request.
        self._env_proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._proxies: dict[tuple[str, str], URL | None] = {}
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        # A request holds a slot from before it asks aiohttp for a connection until aiohttp
        # lets that connection go. The slots, not aiohttp's own limit (which never has to
        # wait), queue the requests: the wait is bounded by the pool timeout on its own, and a
        # request cancelled while it waits (its client left) leaves the queue at once.
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        url = request.url
        # A URL's `user:password@` is already httpx's Authorization header; aiohttp would
        # refuse to see both.
        target = str(url.copy_with(username=None, password=None) if url.userinfo else url)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        try:
            data: Any = request.content
        except httpx.RequestNotRead:  # a streamed request body
            data = _stream(request.stream)
            # aiohttp frames a body of unknown length itself, and refuses to be told to.
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        timeout = request.extensions.get("timeout") or self._default
        await self._acquire(timeout.get("pool"), request)
        try:
            with _Mapped(request):
                response = await session.request(
                    request.method,
                    URL(target, encoded=True),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=self._timeout(timeout),
                    proxy=self._proxy(url.scheme, url.host),
                )
        except BaseException:
            self._slots.release()
            raise
        connection = response.connection
        if connection is None:  # the whole body came with the headers: already let go
            self._slots.release()
        else:  # as aiohttp's own total timeout is ended
            connection.add_callback(self._slots.release)
            protocol = connection.protocol
            if request.extensions.get(SILENCES_WATCHED) and protocol is not None:
                # Set per request by aiohttp: the next request on this connection has its own.
                protocol.read_timeout = None
                protocol.start_timeout()  # no timeout: cancels the timer armed for the headers
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            extensions=_extensions(response),
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

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

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the upstream transport is closed")
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx's client keeps the cookies
            auto_decompress=False,  # upstream.py inflates, in bounded steps
            skip_auto_headers=_AUTO_HEADERS,
            trust_env=False,  # proxies: see `_proxy`
            requote_redirect_url=False,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        return self._session

    def _timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        connect, read, pool = timeout.get("connect"), timeout.get("read"), timeout.get("pool")
        key = (connect, read, pool)
        cached = self._timeouts.get(key)
        if cached is None:
            # aiohttp's `connect` covers its wait for a pooled connection (none: the slots
            # wait first) and the connect; `sock_read` each wait for data, headers or body.
            cached = aiohttp.ClientTimeout(
                total=None, connect=connect, sock_connect=connect, sock_read=read
            )
            if len(self._timeouts) >= 64:  # per-request timeouts that keep changing
                self._timeouts.clear()
            self._timeouts[key] = cached
        return cached

    def _proxy(self, scheme: str, host: str) -> URL | None:
        key = (scheme, host)
        if key in self._proxies:
            return self._proxies[key]
        proxy = None
        env = self._env_proxies
        address = env.get(scheme) or env.get("all")
        if address and not urllib.request.proxy_bypass(host):  # NO_PROXY
            proxy = URL(address if "://" in address else f"http://{address}")
        self._proxies[key] = proxy
        return proxy


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it, piece by piece as it arrives."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _Mapped(self._request):
            while chunk := await content.readany():
                yield chunk

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # read to the end: the connection goes back to the pool
        else:
            # Left early: only closing the connection tells the upstream to stop.
            response.close()


def _extensions(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """What httpcore tells httpx about the answer: the HTTP version and the reason phrase."""
    version = response.version
    if version is None or version == (1, 1):
        http_version = b"HTTP/1.1"
    else:
        http_version = f"HTTP/{version.major}.{version.minor}".encode()
    extensions: dict[str, Any] = {"http_version": http_version}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode("latin-1")
    return extensions


async def _stream(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterator[bytes]:
    if isinstance(stream, httpx.AsyncByteStream):
        async for part in stream:
            yield part
    else:
        for part in stream:
            yield part


# aiohttp's exceptions, most specific first, and what httpcore raises in their place.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut or malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # status line, headers
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset by peer
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
)


class _Mapped:
    """`with _Mapped(request):` aiohttp's failures inside the block become httpx's. A class
    rather than a generator: every request enters it twice."""

    __slots__ = ("_request",)

    def __init__(self, request: httpx.Request) -> None:
        self._request = request

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if isinstance(exc, aiohttp.ClientError):  # the last entry of `_ERRORS` takes any
            for theirs, ours in _ERRORS:
                if isinstance(exc, theirs):
                    raise ours(failure_words(exc), request=self._request) from exc


def failure_words(exc: aiohttp.ClientError) -> str:
    """What went wrong, in the user's words: aiohttp's own texts show its internals
    (`Cannot connect to host h:443 ssl:default [...]`, `<TransferEncodingError: 400, ...>`)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or "not trusted"
        return f"its TLS certificate was refused ({reason})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed (is it https on an http port, or the reverse?)"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "its host name does not resolve"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"the HTTP proxy cannot be reached ({_os_words(exc)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_words(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "no connection within the connect timeout"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "nothing received within the read timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off before its end"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"the answer is not valid HTTP ({exc.message})"
    if isinstance(exc, aiohttp.ClientOSError):
        return _os_words(exc)
    return type(exc).__name__


def _os_words(exc: aiohttp.ClientOSError) -> str:
    """`connection refused`, `network is unreachable`: the system's words, lower-cased."""
    cause = getattr(exc, "os_error", exc)
    number = getattr(cause, "errno", None)
    # asyncio's own text for a refused connection is "Connect call failed ('1.2.3.4', 443)".
    text = os.strerror(number) if number else getattr(cause, "strerror", None)
    text = text or type(cause).__name__
    return text[0].lower() + text[1:]
