"""The one place that talks HTTP to the upstream; httpx failures become Anthropic errors here."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

from . import __version__
from .config import Settings, UpstreamSettings, mask
from .core import providers
from .core.errors import InvalidRequest, UpstreamError, from_upstream_response
from .core.routing import DEFAULT_UPSTREAM
from .transport import pooled_transport

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
_SURROGATE = re.compile("[\ud800-\udfff]")


ANTHROPIC_VERSION = "2023-06-01"
BASE_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    # httpx decodes these; an event stream through a compressing gateway stays readable.
    "accept-encoding": "gzip, deflate",
    "user-agent": f"claude-bridge/{__version__}",
}
# What a pass-through upstream hears of the client's headers: the API version, the betas and
# the user profile it asked for (the SDK sends `user_profile_id` as a header). Its key and
# anything else stay here.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "anthropic-user-profile-id")


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
    """One named upstream: where its requests go, with which key, in which mode."""

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
        self.base_url = config.base_url.rstrip("/")
        # Named in error messages and logs: never with the URL's `user:password@`.
        self.host = providers.host_of(self.base_url) or "upstream"
        self.retries = settings.retries
        self.retry_backoff = settings.retry_backoff
        self.body_timeout = settings.read_timeout
        self._key = config.api_key.get_secret_value() if config.api_key else ""
        self._transport = transport
        # httpx's `Timeout(read_timeout, connect=connect_timeout)`, as its client would send.
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        self._extensions = {"timeout": timeout.as_dict()}
        if self.mode == "anthropic":
            self.url = providers.messages_url(self.base_url)
            self._headers = {
                **BASE_HEADERS,
                "anthropic-version": ANTHROPIC_VERSION,
                **providers.anthropic_headers(self.host, self._key),
            }
        else:
            profile = providers.resolve(config.provider, self.base_url, "")
            self.url = providers.chat_completions_url(
                self.base_url, profile, config.azure_api_version
            )
            self._headers = {**BASE_HEADERS, **providers.auth_headers(profile, self._key)}

    def request_headers(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        """Headers for one request: this upstream's, plus what pass-through forwards."""
        if self.mode != "anthropic":
            return self._headers
        forwarded = {k: client_headers[k] for k in FORWARDED_HEADERS if k in client_headers}
        return {**self._headers, **forwarded}

    async def complete(self, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """POST a non-streaming request; the parsed JSON of a 2xx answer."""
        response = await self._open(body, headers)
        try:
            content = await self._read_body(response)
        finally:
            await response.aclose()
        try:
            return json.loads(content)
        except ValueError:
            raise UpstreamError(
                f"upstream {self.host} answered {response.status_code} with a body that is not "
                "JSON",
                status=500,
                type="api_error",
            ) from None

    @asynccontextmanager
    async def stream(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[httpx.Response]:
        """Open a streaming request; raises before yielding when the upstream answered non-2xx,
        so the caller can still send a real HTTP error status. Closing the context closes the
        upstream connection, which is how a client disconnect cancels the upstream work."""
        response = await self._open(body, headers)
        try:
            yield response
        finally:
            await response.aclose()

    async def _open(self, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """Send `body`; the response once its status is 2xx, else the mapped Anthropic error
        (the response closed)."""
        response = await self._send(_dumps(body), headers)
        if response.status_code < 300:
            return response
        try:
            content = await _read_limited(response)
        finally:
            await response.aclose()
        raise self._scrubbed(
            from_upstream_response(response.status_code, content, dict(response.headers))
        )

    async def chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        # Decoded when a gateway gzipped the event stream (or from memory, when a transport
        # answered with a body already read); else raw, one layer fewer per chunk.
        decoded = "content-encoding" in response.headers or response.is_stream_consumed
        pieces = response.aiter_bytes() if decoded else response.aiter_raw()
        try:
            async for chunk in pieces:
                yield chunk
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def scrub(self, text: str) -> str:
        """`text` without the upstream key, for messages an upstream may echo it in."""
        return text.replace(self._key, mask(self._key)) if self._key else text

    async def _send(self, content: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST `content`, the response streamed (the caller reads and closes it).

        Connection failures (refused, DNS) and 502/503 answers are sent again, up to `retries`
        times after a growing, jittered backoff: nothing of a reply exists yet, so nothing was
        relayed. Timeouts and every other status are the caller's."""
        attempt = 0
        while True:
            request = httpx.Request(
                "POST", self.url, content=content, headers=headers, extensions=self._extensions
            )
            try:
                response = await self._transport.handle_async_request(request)
                response.request = request
            except httpx.ConnectError as exc:
                if attempt >= self.retries:
                    raise self._transport_error(exc) from None
                delay = self._delay(attempt)
                reason = f"could not connect ({_reason(exc)})"
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
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
                self.retries,
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

    async def _read_body(self, response: httpx.Response) -> bytes:
        """A 2xx body, bounded in size and in total time: an upstream dripping bytes slowly
        must not hold the request for longer than `read_timeout`."""
        body = bytearray()
        try:
            # anyio's timeout, not asyncio's: an httpcore transport (httpx's own) shields the
            # release of the connection (at the end of the body) from the former only.
            with anyio.fail_after(self.body_timeout):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BODY:
                        raise UpstreamError(
                            f"upstream {self.host} answered with more than {MAX_RESPONSE_BODY} "
                            "bytes",
                            status=500,
                            type="api_error",
                        )
        except TimeoutError:
            raise UpstreamError(
                f"timed out reading the answer of upstream {self.host}",
                status=504,
                type="timeout_error",
            ) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        return bytes(body)

    def _scrubbed(self, error: UpstreamError) -> UpstreamError:
        error.message = self.scrub(error.message)
        return error

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        # The message names the host, never the URL's query or the request headers (the key).
        if isinstance(exc, httpx.TimeoutException):
            phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
            return UpstreamError(
                f"timed out {phase} upstream {self.host}", status=504, type="timeout_error"
            )
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(
                f"could not connect to upstream {self.host}: {_reason(exc)}",
                status=500,
                type="api_error",
            )
        return UpstreamError(
            f"upstream {self.host} connection failed: {_reason(exc)}", status=500, type="api_error"
        )


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


async def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return bytes(body)


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # Python's parser takes NaN, Infinity and 1e999; JSON (and the upstream) does not.
        raise InvalidRequest(
            "request body has a number JSON cannot carry (NaN or Infinity)"
        ) from None
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (`\ud83d` cut from its pair, e.g. by a truncated tool output) has
        # no UTF-8 form; the conversation must stay usable, so it becomes U+FFFD.
        return _SURROGATE.sub("\ufffd", text).encode()
