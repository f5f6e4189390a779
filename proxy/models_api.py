"""`GET /v1/models`, `GET /v1/models/{id}` and Claude Code's warm-up probe (PROTOCOL.md 11.1, 11.4).

The list is what the settings route to (`core.catalog.configured_offers`), under gateway ids, in
the Anthropic Models API's shape: the anthropic SDKs' `models.list()` / `models.retrieve()` and
Claude Code's gateway model discovery read it. It is built on the first request, off the event
loop (the windows may need the genai-prices table), and kept: the settings do not change while
the app runs. Both endpoints are behind the auth token when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .config import Settings
from .core import catalog, dialects, providers
from .core.errors import BridgeError, NotFound
from .core.ids import new_request_id
from .core.routing import DEFAULT_UPSTREAM
from .upstream import Upstreams
from .windows import Windows

REFRESH = 600.0
"""Seconds an upstream's list of models is kept before it is asked again."""

Render = Callable[[BridgeError, str], Response]


def where(settings: Settings, upstream: str) -> str:
    """How the user knows an upstream: its host, and its name when it is a named one."""
    host = providers.host_of(settings.endpoints()[upstream].base_url)
    return host if upstream == DEFAULT_UPSTREAM else f"{upstream} ({host})"


def offered_models(
    settings: Settings, windows: Windows, listed: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """Every model the settings route to, as `ModelInfo` objects, the big model first; then
    those the upstreams list (`listed`, by upstream name) that are not among them."""
    offers = catalog.configured_offers(
        big_model=settings.big_model,
        small_model=settings.small_model,
        rules=settings.rules(),
        upstreams=settings.upstreams.keys(),
    )
    offers += catalog.listed_offers(listed or {}, offers)
    return [
        catalog.model_info(o, where(settings, o.upstream), windows.of(o.upstream, o.model))
        for o in offers
    ]


class ModelsApi:
    """The two endpoints, the list they serve, and the upstreams' own listings behind it.

    The upstreams are asked what they list (`Upstream.model_ids`) in the background when a
    list is wanted and the last answers are older than `REFRESH` seconds: a request is never
    kept waiting for them, so the first list may lack them (`code` asks once at start)."""

    def __init__(
        self,
        settings: Settings,
        windows: Windows,
        upstreams: Upstreams,
        *,
        authorize: Callable[[Request], None],
        render: Render,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._windows = windows
        self._upstreams = upstreams
        self._authorize = authorize
        self._render = render
        self._clock = clock
        self._listed: dict[str, list[str]] = {}
        self._listed_at: float | None = None
        self._listing: asyncio.Task[None] | None = None
        self._generation = 0  # of `_listed`: a list built from an older one is rebuilt
        self._built: tuple[int, list[dict[str, Any]]] | None = None
        self._building: tuple[int, asyncio.Task[list[dict[str, Any]]]] | None = None

    async def models(self) -> list[dict[str, Any]]:
        self._refresh()
        generation = self._generation
        if self._built is None or self._built[0] != generation:
            # One build per listing for the requests that come before it is done, kept here
            # so that a request that leaves cannot cancel it for the others.
            if self._building is None or self._building[0] != generation:
                build = asyncio.to_thread(
                    offered_models, self._settings, self._windows, dict(self._listed)
                )
                self._building = (generation, asyncio.create_task(build))
            self._built = (generation, await asyncio.shield(self._building[1]))
        return self._built[1]

    def _refresh(self) -> None:
        running = self._listing is not None and not self._listing.done()
        fresh = self._listed_at is not None and self._clock() - self._listed_at < REFRESH
        if not running and not fresh:
            self._listing = asyncio.create_task(self._fetch())

    async def _fetch(self) -> None:
        named = list(self._upstreams.named.values())
        # Every dialect of an upstream lists its models alike: the first one's listing.
        listings = [dialects.candidates(u.mode)[0].listing(u.endpoint) for u in named]
        calls = (u.model_ids(w) for u, w in zip(named, listings, strict=True))
        found = await asyncio.gather(*calls)
        listed = {u.name: ids for u, ids in zip(named, found, strict=True) if ids}
        self._listed_at = self._clock()
        if listed != self._listed:
            self._listed = listed
            self._generation += 1

    async def aclose(self) -> None:
        if self._listing is not None:
            self._listing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listing

    async def list(self, request: Request) -> Response:
        request_id = new_request_id()
        query = request.query_params
        try:
            self._authorize(request)
            answer = catalog.page(
                await self.models(),
                limit=catalog.limit_param(query.get("limit")),
                after_id=query.get("after_id") or None,
                before_id=query.get("before_id") or None,
            )
        except BridgeError as error:
            return self._render(error, request_id)
        return _json(answer, request_id)

    async def retrieve(self, request: Request) -> Response:
        request_id = new_request_id()
        model_id = request.path_params["model_id"]
        try:
            self._authorize(request)
            found = catalog.find(await self.models(), model_id)
            if found is None:
                raise NotFound(f"model: {model_id} is not a model of this claude-bridge")
        except BridgeError as error:
            return self._render(error, request_id)
        return _json(found, request_id)


async def hello(request: Request) -> Response:
    """Claude Code's connection-warming probe (`HEAD /api/hello`): answered, never checked."""
    return Response(status_code=200, headers={"request-id": new_request_id()})


def _json(data: Any, request_id: str) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, headers={"request-id": request_id}, media_type="application/json")
