"""`claude-bridge doctor`'s upstream checks: each upstream reachable, its key accepted, its
models listed and those the settings route to among them; with `live`, a 1-token completion
through the proxy itself, as a client's request would go.

The listing is asked as the proxy asks it for `GET /v1/models` (the upstream's first dialect's
`listing`, over the same pooled transport), but its status is kept: a refused key is a 401
here, where the proxy would only list nothing. The live completion goes through the app in
this process (`create_app`), so the translation, the provider's rules and the key are all the
ones a real request gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from ..app import create_app
from ..config import Settings
from ..core import dialects, untrusted
from ..core.routing import DEFAULT_UPSTREAM, gateway_id
from ..pricing import routed_models
from ..transport import pooled_transport
from ..upstream import Upstream, Upstreams
from .checks import Check

SHOWN_MODELS = 5
"""Listed models named in a row; the rest are counted."""
LIVE_PROMPT = "Reply with OK."
LISTING_TIMEOUT = 30.0
MAX_LISTING = 8 * 1024 * 1024
"""Bytes of a model listing read at most (OpenRouter's, the longest known, is about 1 MB)."""
"""Seconds at most for a model listing: a doctor should not sit on a silent upstream."""


def key_setting(name: str, settings: Settings) -> str:
    """Where the user sets upstream `name`'s key."""
    if name == DEFAULT_UPSTREAM:
        return "OPENAI_API_KEY"
    variable = settings.upstreams[name].api_key_env
    return variable or f"api_key_env under [upstreams.{name}]"


def url_setting(name: str) -> str:
    return "OPENAI_BASE_URL" if name == DEFAULT_UPSTREAM else f"base_url under [upstreams.{name}]"


def _label(name: str, upstream: Upstream) -> str:
    return f"upstream {upstream.host}" if name == DEFAULT_UPSTREAM else f"upstream {name}"


async def upstream_checks(settings: Settings, *, live: bool) -> list[Check]:
    """A row per upstream (its listing), a row per routed model it does not list, and with
    `live` a row per routed model (its completion)."""
    transport = pooled_transport(settings)
    upstreams = Upstreams(settings, transport)
    routed = routed_models(settings)
    checks: list[Check] = []
    try:
        for name, upstream in upstreams.named.items():
            wanted = [model for where, model in routed if where == name and "*" not in model]
            checks += await _listing(name, upstream, wanted, settings, transport)
    finally:
        await upstreams.aclose()
    if live:
        checks += await _live(settings, routed)
    return checks


async def _listing(
    name: str,
    upstream: Upstream,
    wanted: list[str],
    settings: Settings,
    transport: httpx.AsyncBaseTransport,
) -> list[Check]:
    label = _label(name, upstream)
    listing = dialects.candidates(upstream.mode)[0].listing(upstream.endpoint)
    if listing is None:
        return [Check(label, "ok", "lists no models (Azure deployment): use --live to try it")]
    timeout = httpx.Timeout(
        min(settings.read_timeout, LISTING_TIMEOUT), connect=settings.connect_timeout
    )
    request = httpx.Request(
        "GET",
        listing.url,
        headers=upstream.headers(listing.headers),
        extensions={"timeout": timeout.as_dict()},
    )
    try:
        response = await transport.handle_async_request(request)
        try:
            body = await _start_of(response)
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        detail = f"cannot reach {upstream.host}: {upstream.scrub(str(exc) or type(exc).__name__)}"
        return [Check(label, "fail", detail, f"start it, or correct {url_setting(name)}")]
    status = response.status_code
    if status in (401, 403):
        detail = f"refused the key: {status} {upstream.scrub(_message(body))}"
        return [Check(label, "fail", detail, f"set {key_setting(name, settings)} to a valid key")]
    ids = _ids(body) if status == 200 else None
    if ids is None:
        detail = f"reachable, but GET {listing.url} answered {status}: key and models unchecked"
        return [Check(label, "warn", detail, "run `claude-bridge doctor --live` to try a request")]
    shown = ", ".join(ids[:SHOWN_MODELS]) + (
        f" (+{len(ids) - SHOWN_MODELS})" if ids[SHOWN_MODELS:] else ""
    )
    listed = f"{len(ids)} models listed: {shown}" if ids else "it lists no models"
    # Some servers list models without asking for a key: only `--live` proves it is taken.
    checks = [Check(label, "ok", f"reachable, key not refused, {listed}")]
    for model in wanted:
        if ids and model not in ids:
            detail = f"{upstream.host} does not list {model!r}, which the settings route to"
            fix = "set BIG_MODEL / SMALL_MODEL / the route's model to a listed one"
            checks.append(Check(f"model {model}", "warn", detail, fix))
    return checks


async def _start_of(response: httpx.Response) -> bytes:
    """The body, up to `MAX_LISTING` bytes: upstream bytes are untrusted."""
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > MAX_LISTING:
            break
    return bytes(body[:MAX_LISTING])


def _ids(body: bytes) -> list[str] | None:
    try:
        data = untrusted.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _message(body: bytes) -> str:
    """An error body's message (OpenAI's and Anthropic's shapes), else its start."""
    try:
        error = untrusted.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    message = error.get("message") if isinstance(error, dict) else None
    text = message if isinstance(message, str) else body.decode("utf-8", "replace")
    return text.strip()[:200]


@asynccontextmanager
async def _in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, served in this process with its start-up and shutdown."""
    app: Starlette = create_app(settings)
    headers = {"anthropic-version": "2023-06-01"}
    if settings.auth_token is not None:
        headers["x-api-key"] = settings.auth_token.get_secret_value()
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",
            headers=headers,
            timeout=settings.read_timeout,
        )
        async with client:
            yield client


async def _live(settings: Settings, routed: list[tuple[str, str]]) -> list[Check]:
    pairs = list(dict.fromkeys((u, m) for u, m in routed if "*" not in m))
    if not pairs:
        detail = "no model to try: the settings route no Claude model anywhere"
        return [Check("live completion", "warn", detail, "set BIG_MODEL (and SMALL_MODEL)")]
    checks = []
    async with _in_process(settings) as client:
        for upstream, model in pairs:
            body = {
                "model": gateway_id(upstream, model),
                "max_tokens": 1,
                "messages": [{"role": "user", "content": LIVE_PROMPT}],
            }
            answer = await client.post("/v1/messages", json=body)
            checks.append(_completion(upstream, model, answer, settings))
    return checks


def _completion(upstream: str, model: str, answer: httpx.Response, settings: Settings) -> Check:
    name = f"completion {model}" + ("" if upstream == DEFAULT_UPSTREAM else f" on {upstream}")
    if answer.status_code == 200:
        data: Mapping[str, Any] = answer.json()
        usage = data.get("usage") or {}
        detail = f"answered (1 token asked; {usage.get('input_tokens', '?')} tokens in)"
        return Check(name, "ok", detail)
    message = _message(answer.content)
    if answer.status_code in (401, 403):
        fix = f"set {key_setting(upstream, settings)} to a valid key"
    elif answer.status_code == 404:
        fix = "route to a model the upstream serves (BIG_MODEL, SMALL_MODEL, [[routes]])"
    else:
        fix = "as the message says; `serve --log-level debug` logs the whole exchange"
    return Check(name, "fail", f"{answer.status_code}: {message}", fix)
