"""The one place that talks HTTP to the upstream; httpx failures become Anthropic errors here.

It sends bytes to a URL with headers, as a `Call` says; what the URL, headers and body are, and
what an error body means, is the dialect's (`core/dialects`), which the caller asks.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from . import __version__, inflate
from .config import Settings, UpstreamSettings, mask, url_password
from .core import providers, untrusted
from .core.endpoint import Address, Endpoint
from .core.errors import (
    ErrorMap,
    UpstreamError,
    from_upstream_response,
    is_error_status,
    unexpected_status,
)
from .core.routing import DEFAULT_UPSTREAM
from .core.wire import dumps
from .transport import SILENCES_WATCHED, pooled_transport

log = logging.getLogger("claude_bridge.upstream")

# Bodies of failed upstream answers are read this far at most: enough for any error message.
MAX_ERROR_BODY = 64 * 1024
# A non-streaming answer bigger than this is not a chat completion worth translating.
MAX_RESPONSE_BODY = 64 * 1024 * 1024
# Answers that say the upstream (or the gateway in front of it) did not take the request on:
# safe to send again, as long as nothing of the reply was relayed.
RETRY_STATUSES = frozenset({502, 503})
# A `retry-after` longer than this is the client's to honour: the answer is passed on instead.
MAX_RETRY_AFTER = 10.0
# Seconds a client is told to wait after the pool stayed full for `pool_timeout` (529).
OVERLOADED_RETRY_AFTER = "2"

BASE_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    # `inflate` undoes these (in bounded steps): an event stream through a compressing gateway
    # stays readable.
    "accept-encoding": "gzip, deflate",
    "user-agent": f"claude-bridge/{__version__}",
}


@dataclass(frozen=True)
class Call:
    """One upstream request: where it goes, with which headers (`Upstream.headers`), what it
    sends (bytes: serialized already), and what the upstream's error bodies mean."""

    url: str
    headers: Mapping[str, str]
    body: dict[str, Any] | bytes
    errors: ErrorMap = from_upstream_response
    retries: int | None = None
    """Connect errors and 502/503 sent again this many times; None: the `retries` setting.
    A failover chain makes it 0: its next target is the retry (proxy/resilience)."""


class Upstreams:
    """Every configured upstream by name, all over one connection pool.

    Requests go straight to the transport: httpx's client would add ~0.1 ms of CPU per request
    (auth flow, cookie jar, redirect loop) for nothing this proxy uses."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._transport = transport or pooled_transport(settings)
        self.named = {
            name: Upstream(name, config, settings, self._transport)
            for name, config in settings.endpoints().items()
        }
        self.default = self.named[DEFAULT_UPSTREAM]

    def __getitem__(self, name: str) -> Upstream:
        return self.named[name]

    async def aclose(self) -> None:
        await self._transport.aclose()


class Upstream:
    """One named upstream: where it is, with which key, in which mode (`config.mode`)."""

    def __init__(
        self,
        name: str,
        config: UpstreamSettings,
        settings: Settings,
        transport: httpx.AsyncBaseTransport,
    ):
        self.name = name
        self.config = config
        self.mode = config.mode
        # A `user:password@` in the URL is sent as HTTP Basic auth (the settings refuse it
        # next to a key), never as part of the URL: the URL is recorded and shown.
        base_url, basic = _url_credentials(config.base_url)
        self.base_url = base_url.rstrip("/")
        # Named in error messages and logs: never with the URL's `user:password@`.
        self.host = providers.host_of(self.base_url) or "upstream"
        self.retries = settings.retries
        self.retry_backoff = settings.retry_backoff
        self.body_timeout = settings.read_timeout
        # A key pool's first key is the upstream's own (model listings); requests take theirs
        # from the pool (`resilience.keys`).
        pool = [key.key.get_secret_value() for key in config.pool()]
        self._key = pool[0] if pool else ""
        self._secrets = [s for s in (*pool, url_password(config.base_url)) if s]
        self._transport = transport
        # httpx's `Timeout(read_timeout, connect=..., pool=...)`, as its client would send.
        timeout = httpx.Timeout(
            settings.read_timeout, connect=settings.connect_timeout, pool=settings.pool_timeout
        )
        self._extensions: dict[str, Any] = {"timeout": timeout.as_dict()}
        # A stream's silences are the relay's to notice (its ticker, `Pipeline._relay`): the
        # transport need not re-arm a read timer on every piece once the headers are in.
        self._stream_extensions = {**self._extensions, SILENCES_WATCHED: True}
        self._basic = basic
        self.endpoint = Endpoint(
            self.base_url, self.host, self._key, config.provider, config.azure_api_version
        )
        """What a dialect needs to address this upstream (`Dialect.address`)."""

    def headers(self, own: Mapping[str, str]) -> dict[str, str]:
        """The headers of a request with a dialect's `own` (auth, API version) to this upstream:
        the transport's, those, and the Basic auth of a URL's `user:password@`."""
        return {**BASE_HEADERS, **own, **self._basic}

    async def complete(self, call: Call) -> Any:
        """POST a non-streaming request; the parsed JSON of a 2xx answer (`untrusted.loads`:
        no lone surrogates, no NaN, no deep nesting)."""
        response = await self._open(call)
        try:
            content = await self._read_body(response)
        finally:
            await response.aclose()
        try:
            return untrusted.loads(content)
        except untrusted.TooDeep as exc:
            problem = f"{exc}"
        except ValueError:
            problem = "a body that is not JSON"
        raise UpstreamError(
            f"upstream {self.host} answered {response.status_code} with {problem}",
            status=502,
            type="api_error",
        )

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[httpx.Response]:
        """Open a streaming request; raises before yielding when the upstream answered non-2xx,
        so the caller can still send a real HTTP error status. Closing the context closes the
        upstream connection, which is how a client disconnect cancels the upstream work.
        The body's silences are the caller's to time (`Pipeline._relay` does)."""
        response = await self._open(call, self._stream_extensions)
        try:
            yield response
        finally:
            await response.aclose()

    async def _open(
        self, call: Call, extensions: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """Send `call`; the response once its status is 2xx, else the error `call.errors` maps
        it to (the response closed)."""
        body = call.body
        content = body if isinstance(body, bytes) else dumps(body)  # bytes: serialized already
        response = await self._send(call.url, content, call.headers, call.retries, extensions)
        status = response.status_code
        if 200 <= status <= 299:
            coding = inflate.unsupported(response.headers.get("content-encoding"))
            if coding is None:
                return response
            await response.aclose()
            raise UpstreamError(
                f"upstream {self.host} answered with content-encoding {coding!r}, which the "
                "proxy cannot decode (it asks for gzip or deflate)",
                status=502,
            )
        if not is_error_status(status):
            await response.aclose()
            location = response.headers.get("location") if 300 <= status <= 399 else None
            redirect = None if location is None else providers.host_of(location)
            raise unexpected_status(status, self.host, redirect)
        try:
            content = await _read_limited(response)
        finally:
            await response.aclose()
        # Scrubbed before the mapping cuts the text: a key echoed across the cut would
        # otherwise leave its first characters.
        text = self.scrub(content.decode("utf-8", "replace"))
        raise self._scrubbed(call.errors(status, text, response.headers, self.host))

    def chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The body of a 2xx answer, inflated when it is content-encoded, in pieces of at most
        `inflate.PIECE` bytes; failures as `UpstreamError`."""
        return _pieces(response, self)

    def failure(self, exc: httpx.HTTPError | inflate.InflateError) -> UpstreamError:
        """What reading a body that failed with `exc` tells the client."""
        if isinstance(exc, inflate.InflateError):
            return UpstreamError(f"upstream {self.host} sent a {exc}", status=502)
        return self._transport_error(exc)

    def scrub(self, text: str) -> str:
        """`text` without the upstream key (or URL password), for messages an upstream may
        echo it in."""
        for secret in self._secrets:
            text = text.replace(secret, mask(secret))
        return text

    async def _send(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        retries: int | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """POST `content` to `url`, the response streamed (the caller reads and closes it).

        Connection failures (refused, DNS) and 502/503 answers are sent again, up to `retries`
        times (None: the setting's) after a growing, jittered backoff: nothing of a reply exists
        yet, so nothing was relayed. Timeouts and every other status are the caller's."""
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            request = httpx.Request(
                "POST",
                _parsed(url),
                content=content,
                headers=headers,
                extensions=extensions or self._extensions,
            )
            try:
                response = await self._transport.handle_async_request(request)
                response.request = request
            except httpx.ConnectError as exc:
                if attempt >= retries:
                    raise self._transport_error(exc) from None
                delay = self._delay(attempt)
                reason = f"could not connect ({self._reason(exc)})"
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= retries:
                    return response
                wait = self._backoff(attempt, response.headers.get("retry-after"))
                if wait is None:
                    return response
                delay, reason = wait, f"answered {response.status_code}"
                await response.aclose()
            attempt += 1
            log.warning(
                "upstream %s %s; retry %d of %d in %.2f s",
                self.host,
                self.scrub(reason),
                attempt,
                retries,
                delay,
            )
            await asyncio.sleep(delay)

    def _delay(self, attempt: int) -> float:
        # Exponential, with jitter so that many clients refused at once do not return at once.
        return self.retry_backoff * 2.0**attempt * random.uniform(0.5, 1.0)

    def _backoff(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds before the next try; None when the upstream asks for a longer wait than
        the proxy should sit on a request."""
        delay = self._delay(attempt)
        if retry_after is None:
            return delay
        try:
            asked = float(retry_after)
        except ValueError:
            return delay  # an HTTP date: rare from an API; the backoff will do
        return max(delay, asked) if 0 <= asked <= MAX_RETRY_AFTER else None

    async def model_ids(self, listing: Address | None) -> list[str]:
        """The models this upstream lists at `listing` (`Dialect.listing`: `GET .../models`,
        `data[].id` in OpenAI's shape and Anthropic's alike), for `GET /v1/models`; empty when
        it lists none or cannot say."""
        if listing is None:  # Azure's deployment URLs: one model each, listed by nobody
            return []
        headers = self.headers(listing.headers)
        request = httpx.Request("GET", listing.url, headers=headers, extensions=self._extensions)
        try:
            response = await self._transport.handle_async_request(request)
            try:
                body = await self._read_body(response) if response.status_code == 200 else b""
            finally:
                await response.aclose()
            data = untrusted.loads(body).get("data") if body else None
        except (httpx.HTTPError, UpstreamError, ValueError, AttributeError):
            return []
        if not isinstance(data, list):
            return []
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def _read_body(self, response: httpx.Response) -> bytes:
        """A 2xx body, bounded in size and in total time: an upstream dripping bytes slowly
        must not hold the request for longer than `read_timeout`."""
        pieces: list[bytes] = []  # joined once: see `app.read_body`
        size = 0
        # anyio's timeout, not asyncio's: an httpcore transport (httpx's own) shields the
        # release of the connection (at the end of the body) from the former only. A scope
        # with a deadline is `fail_after` without its two generators.
        with anyio.CancelScope(deadline=anyio.current_time() + self.body_timeout) as scope:
            async for piece in self.chunks(response):
                size += len(piece)
                if size > MAX_RESPONSE_BODY:
                    raise UpstreamError(
                        f"upstream {self.host} answered with more than {MAX_RESPONSE_BODY} bytes",
                        status=502,
                        type="api_error",
                    )
                pieces.append(piece)
        if scope.cancelled_caught:
            raise UpstreamError(
                f"timed out reading the answer of upstream {self.host}",
                status=504,
                type="timeout_error",
            )
        return b"".join(pieces)

    def _scrubbed(self, error: UpstreamError) -> UpstreamError:
        error.message = self.scrub(error.message)
        return error

    def _reason(self, exc: Exception) -> str:
        """The first line of a failure's text, scrubbed before it is cut."""
        text = self.scrub(str(exc) or type(exc).__name__)
        return text.splitlines()[0][:200]

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        # The message names the host, never the URL's query or the request headers (the key).
        if isinstance(exc, httpx.PoolTimeout):
            # Nothing was sent: the client may try again, and the SDKs and Claude Code do.
            return UpstreamError(
                f"claude-bridge is overloaded: {self._reason(exc)}",
                status=529,
                type="overloaded_error",
                headers={"retry-after": OVERLOADED_RETRY_AFTER},
            )
        if isinstance(exc, httpx.TimeoutException):
            phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
            return UpstreamError(
                f"timed out {phase} upstream {self.host}", status=504, type="timeout_error"
            )
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(
                f"could not connect to upstream {self.host}: {self._reason(exc)}",
                status=500,
                type="api_error",
            )
        return UpstreamError(
            f"upstream {self.host} connection failed: {self._reason(exc)}",
            status=500,
            type="api_error",
        )


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """`url` as httpx parses it, once: its parser costs more than the rest of the request it
    makes (~30 µs), and the URLs an upstream is called at are few."""
    return httpx.URL(url)


def _url_credentials(base_url: str) -> tuple[str, dict[str, str]]:
    """The base URL without `user:password@`, and the Basic `authorization` header they are."""
    url = httpx.URL(base_url)
    if not url.userinfo:
        return base_url, {}
    pair = f"{url.username}:{url.password}".encode()
    header = {"authorization": f"Basic {base64.b64encode(pair).decode()}"}
    return str(url.copy_with(username=None, password=None)), header


async def _pieces(response: httpx.Response, mapped: Upstream | None) -> AsyncIterator[bytes]:
    """The body as `chunks` gives it; httpx's and `inflate`'s failures as `mapped` says, or as
    they are. One generator between the transport's and the relay's: every layer costs
    microseconds on every piece of a stream (the transport's body is read directly rather
    than through httpx's `aiter_raw`, which adds two for nothing used here)."""
    try:
        stream = response.stream
        if response.is_stream_consumed or not isinstance(stream, httpx.AsyncByteStream):
            # A transport in this process answered with the body read (and decoded) already.
            async for piece in response.aiter_bytes():
                yield piece
            return
        header = response.headers.get("content-encoding")
        inflater = inflate.Inflater(header) if inflate.codings(header) else None
        async for raw in stream:
            if inflater is not None:
                for piece in inflater.feed(raw):
                    yield piece
            elif len(raw) <= inflate.PIECE:
                yield raw
            else:
                for start in range(0, len(raw), inflate.PIECE):  # no piece is much work
                    yield raw[start : start + inflate.PIECE]
        if inflater is not None:
            for piece in inflater.flush():
                yield piece
    except (httpx.HTTPError, inflate.InflateError) as exc:
        if mapped is None:
            raise
        raise mapped.failure(exc) from None


async def _read_limited(response: httpx.Response) -> bytes:
    """The start of an error answer: enough for any message, inflated no further."""
    body = bytearray()
    try:
        async for piece in _pieces(response, None):
            body += piece
            if len(body) >= MAX_ERROR_BODY:
                break
    except (httpx.HTTPError, inflate.InflateError):
        pass
    return bytes(body)
