"""The front door: what a web page can make a browser send is refused before any other work.

claude-bridge listens next to the user's browser and spends the user's key. Any page the user
visits can make the browser POST to `127.0.0.1:8082` as a "simple" request (a `text/plain`,
form or multipart body: no CORS preflight), and with DNS rebinding (the page's own name made to
resolve to 127.0.0.1) it can even read the answers. Three checks, in this order, before the
route, the auth check or the body is touched:

* `Host` must name this machine: a loopback name or address (any port), the address `serve`
  binds, or an `allowed_hosts` name. A rebinding page's requests carry its own name: 403.
* `Origin`, when present, must be in `allowed_origins` (default none: the SDKs and Claude Code
  send no `Origin`, browsers always do on a POST): 403. CORS preflights are answered for those
  origins only, and only their responses carry `Access-Control-Allow-Origin`.
* A POST body must be declared `application/json`: 400 `invalid_request_error`, the status the
  Anthropic API documents for a request whose format is wrong.

It runs on every request, so everything that can be is computed once: the hot path for an SDK
request is one pass over the headers and a few set lookups.

A refusal is logged as a warning the first time its words are seen (a page probing the proxy,
or a client sending the wrong content type, shows on the proxy's side too), and not again: a
page can send thousands a second, and must not fill the log or spend the proxy's time on it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .core.errors import BridgeError, InvalidRequest
from .core.ids import new_request_id

log = logging.getLogger("claude_bridge.guard")

Render = Callable[[BridgeError, str], Response]
"""Builds the Anthropic error answer (the app's `error_response`), so there is one shape."""

_LOOPBACK_NAMES = ("localhost", "::1")
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
_JSON = b"application/json"
# Host values seen and accepted, so the usual one costs a set lookup; bounded, since a client
# can vary the port.
_HOST_CACHE_SIZE = 256
_SHOWN = 100  # characters of a refused header value repeated in the error message
# Distinct refusals logged; a page can vary the values it sends, and the log stays bounded.
_TOLD = 100
# What the anthropic JS SDK sends from a browser (`dangerouslyAllowBrowser`); a preflight asking
# for more from an allowed origin gets those too (`_extra_headers`).
_SDK_HEADERS = (
    "accept",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "anthropic-version",
    "authorization",
    "content-type",
    "x-api-key",
    "x-stainless-arch",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
# Response headers the SDK reads: the request id it reports, and its retry advice.
_EXPOSED = b"request-id, retry-after, retry-after-ms, x-should-retry"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
# The request headers the checks read, each to its slot: one dict lookup per header.
_WATCHED = {b"host": 0, b"origin": 1, b"content-type": 2, b"access-control-request-method": 3}


class Forbidden(BridgeError):
    status = 403
    type = "permission_error"


def _split_host(value: str) -> str:
    """The name of a `Host` value (`name`, `name:port`, `[v6]:port`), lowercased, no port."""
    value = value.strip().lower()
    if value.startswith("["):
        value, bracket, port = value[1:].partition("]")
        return value if bracket and _is_port(port) else ""
    if value.count(":") == 1:
        value, _, port = value.partition(":")
        if not _is_port(":" + port):
            return ""
    return value[:-1] if value.endswith(".") else value


def _is_port(suffix: str) -> bool:
    """Nothing, or `:` and digits (RFC 3986 allows an empty port)."""
    return suffix in ("", ":") or (suffix.startswith(":") and suffix[1:].isdigit())


def _is_loopback(name: str) -> bool:
    if name.endswith(".localhost"):
        return True
    if not (name.startswith("127.") or ":" in name):
        return False
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _shown(value: bytes) -> str:
    return value[:_SHOWN].decode("latin-1")


def _is_json(content_type: bytes | None) -> bool:
    """`application/json`, any case, with parameters (`; charset=utf-8`) or not."""
    if content_type is None:
        return False
    return content_type.partition(b";")[0].strip().lower() == _JSON


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value  # type: ignore[no-any-return]
    return None


class Guard:
    """Pure ASGI middleware: refuses, or passes the request on untouched (see the module)."""

    def __init__(self, app: ASGIApp, settings: Settings, render: Render) -> None:
        self.app = app
        self.render = render
        bound = _split_host(settings.host)
        names = {*_LOOPBACK_NAMES, *(_split_host(h) for h in settings.allowed_hosts)}
        if bound not in _ANY_ADDRESS:
            names.add(bound)
        self._names = frozenset(names - {""})
        self._accepted: set[bytes] = set()
        self._origins = frozenset(
            o.strip().rstrip("/").lower().encode() for o in settings.allowed_origins
        )
        self._sdk_headers = frozenset(_SDK_HEADERS)
        self._allow_headers = ", ".join(_SDK_HEADERS)
        self._told: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: list[bytes | None] = [None, None, None, None]
        hosts = 0
        watched = _WATCHED.get
        for name, value in scope["headers"]:
            slot = watched(name)
            if slot is not None:
                found[slot] = value
                hosts += slot == 0
        host, origin, content_type, preflight = found
        refusal = None
        if hosts != 1 or host not in self._accepted:
            refusal = self._refuse_host(host, hosts)
        if origin is not None and refusal is None:
            refusal = self._refuse_origin(origin)
        if refusal is not None:
            await self._refuse(refusal, scope, receive, send)
            return
        if origin is not None:
            if preflight is not None and scope["method"] == "OPTIONS":
                await self._preflight(scope, origin)(scope, receive, send)
                return
            send = self._with_cors(send, origin)
        if scope["method"] == "POST" and content_type != _JSON and not _is_json(content_type):
            declared = "none" if content_type is None else repr(_shown(content_type))
            error = InvalidRequest(
                f"the request body must be JSON: send `content-type: application/json` "
                f"(got {declared})"
            )
            await self._refuse(error, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, error: BridgeError, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        if error.message not in self._told and len(self._told) < _TOLD:
            self._told.add(error.message)
            # The path as `%r`: percent-decoded, it may hold control characters.
            log.warning(
                "refused %s %r with %d: %s (the same refusal is not logged again)",
                scope["method"],
                scope["path"][:_SHOWN],
                error.status,
                error.message,
                extra={"request_id": request_id},
            )
        await self.render(error, request_id)(scope, receive, send)

    def _refuse_host(self, host: bytes | None, count: int) -> Forbidden | None:
        if count == 1 and host is not None:
            name = _split_host(host.decode("latin-1"))
            if name in self._names or _is_loopback(name):
                if len(self._accepted) < _HOST_CACHE_SIZE:
                    self._accepted.add(host)
                return None
        shown = "missing" if host is None else repr(_shown(host))
        if count > 1:
            shown = "given more than once"
        return Forbidden(
            f"Host {shown} is not allowed: claude-bridge answers only loopback names, the "
            "address it binds and the names in `allowed_hosts` (a guard against DNS rebinding)"
        )

    def _refuse_origin(self, origin: bytes) -> Forbidden | None:
        if origin in self._origins or origin.lower() in self._origins:
            return None
        return Forbidden(
            f"Origin {_shown(origin)!r} is not allowed: web pages may call claude-bridge only "
            "from the origins in `allowed_origins`"
        )

    def _preflight(self, scope: Scope, origin: bytes) -> Response:
        headers = {
            "access-control-allow-origin": origin.decode("latin-1"),
            "access-control-allow-methods": "GET, POST",
            "access-control-allow-headers": self._allow_headers + self._extra_headers(scope),
            "access-control-max-age": "600",
            "vary": "origin",
        }
        # Chrome asks this before a public page may reach a loopback address.
        if _header(scope, b"access-control-request-private-network") is not None:
            headers["access-control-allow-private-network"] = "true"
        return Response(status_code=204, headers=headers)

    def _extra_headers(self, scope: Scope) -> str:
        """Headers the preflight asks for beyond the SDK's: the origin is trusted, and a newer
        SDK's header must not break it. Only well-formed names are echoed."""
        value = _header(scope, b"access-control-request-headers")
        if value is None:
            return ""
        asked = {h.strip() for h in value.decode("latin-1").lower().split(",")}
        extra = sorted(h for h in asked - self._sdk_headers if _TOKEN.fullmatch(h))
        return "".join(f", {h}" for h in extra)

    @staticmethod
    def _with_cors(send: Send, origin: bytes) -> Send:
        cors = [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", _EXPOSED),
            (b"vary", b"origin"),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *cors]}
            await send(message)

        return send_with_cors
