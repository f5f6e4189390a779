"""`GET /v1/models`, `GET /v1/models/{id}` and Claude Code's warm-up probe (PROTOCOL.md 11.1, 11.4).

The list is what the settings route to (`core.catalog.configured_offers`), under gateway ids, in
the Anthropic Models API's shape: the anthropic SDKs' `models.list()` / `models.retrieve()` and
Claude Code's gateway model discovery read it. It is built on the first request, off the event
loop (the windows may need the genai-prices table), and kept: the settings do not change while
the app runs. Both endpoints are behind the auth token when one is set.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .config import Settings
from .core import catalog, providers
from .core.errors import BridgeError, NotFound
from .core.ids import new_request_id
from .core.routing import DEFAULT_UPSTREAM
from .windows import Windows

Render = Callable[[BridgeError, str], Response]


def where(settings: Settings, upstream: str) -> str:
    """How the user knows an upstream: its host, and its name when it is a named one."""
    host = providers.host_of(settings.endpoints()[upstream].base_url)
    return host if upstream == DEFAULT_UPSTREAM else f"{upstream} ({host})"


def offered_models(settings: Settings, windows: Windows) -> list[dict[str, Any]]:
    """Every model the settings route to, as `ModelInfo` objects, the big model first."""
    offers = catalog.configured_offers(
        big_model=settings.big_model,
        small_model=settings.small_model,
        rules=settings.rules(),
        upstreams=settings.upstreams.keys(),
    )
    return [
        catalog.model_info(o, where(settings, o.upstream), windows.of(o.upstream, o.model))
        for o in offers
    ]


class ModelsApi:
    def __init__(
        self,
        settings: Settings,
        windows: Windows,
        *,
        authorize: Callable[[Request], None],
        render: Render,
    ) -> None:
        self._settings = settings
        self._windows = windows
        self._authorize = authorize
        self._render = render
        self._models: list[dict[str, Any]] | None = None
        self._building: asyncio.Task[None] | None = None

    async def models(self) -> list[dict[str, Any]]:
        if self._models is None:
            # One build for the requests that come before it is done; kept here, so a
            # request that leaves cannot cancel it for the others.
            if self._building is None:
                self._building = asyncio.create_task(asyncio.to_thread(self._build))
            await asyncio.shield(self._building)
        assert self._models is not None
        return self._models

    def _build(self) -> None:
        self._models = offered_models(self._settings, self._windows)

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
