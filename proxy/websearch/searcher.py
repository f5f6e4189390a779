"""Runs one search: one HTTP call to the configured backend, its answer bounded and read.

Whatever goes wrong becomes `SearchFailed` with the API's error code, for a result block: a
search never fails the request. Only the configured address is ever called; the model and the
client choose the query, never where it goes. Keys travel in headers and appear nowhere else.
"""

from __future__ import annotations

import json
import logging
from types import ModuleType

import httpx

from ..config import WebSearchSettings
from ..core.web_search import Result, SearchFailed, SearchTool, kept
from . import brave, exa, searxng, tavily
from .call import Call, read_results

log = logging.getLogger("claude_bridge.websearch")

BACKENDS: dict[str, ModuleType] = {"searxng": searxng, "brave": brave, "tavily": tavily, "exa": exa}
MAX_ANSWER_BYTES = 2 * 1024 * 1024
NOT_CONFIGURED = (
    "web search is not set up in claude-bridge (the proxy this client talks to). To turn it on, "
    'add a [web_search] table to its config file: backend = "searxng" with url = "<your '
    'SearXNG instance>", or backend = "brave", "tavily" or "exa" with api_key_env = "<variable '
    'holding the key>"; then restart it'
)
NO_NATIVE_SEARCH = (
    'web search is set to backend = "upstream", but this upstream has no search of its own '
    "(only OpenRouter and the OpenAI Responses API do): choose searxng, brave, tavily or exa "
    "in claude-bridge's [web_search] table"
)


class Searcher:
    def __init__(
        self,
        settings: WebSearchSettings | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        timeout = settings.timeout if settings else 15.0
        self._client = httpx.AsyncClient(
            transport=transport, timeout=timeout, trust_env=False, follow_redirects=False
        )
        self._replayed: dict[str, list[list[Result] | SearchFailed]] | None = None

    def replay(self, recorded: dict[str, list[list[Result] | SearchFailed]]) -> None:
        """Answer from a journal's searches (`--upstream-replay`) instead of a backend: each
        query's outcomes in the order recorded, the last one again once they run out."""
        self._replayed = recorded

    @property
    def runs(self) -> bool:
        """A backend the proxy can search with is configured."""
        if self._replayed is not None:
            return True
        return self.settings is not None and self.settings.backend in BACKENDS

    @property
    def unavailable(self) -> str:
        """Why searches fail when nothing `runs`: what to configure."""
        return NOT_CONFIGURED if self.settings is None else NO_NATIVE_SEARCH

    @property
    def limit(self) -> int:
        return self.settings.max_results if self.settings else 5

    async def search(self, query: str, tool: SearchTool) -> list[Result]:
        """Up to `limit` results the tool's domain lists allow, or `SearchFailed`."""
        if self._replayed is not None:
            return _replayed(self._replayed, query)
        settings = self.settings
        if settings is None:
            raise SearchFailed("unavailable", NOT_CONFIGURED)
        backend = BACKENDS.get(settings.backend)
        if backend is None:
            raise SearchFailed("unavailable", NO_NATIVE_SEARCH)
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        call: Call = backend.request(query, tool, settings.url or backend.ENDPOINT, key, self.limit)
        data = await self._fetch(call)
        found = read_results(data, backend.RESULTS, backend.SNIPPET, backend.DATES)
        return kept(found, tool, self.limit)

    async def _fetch(self, call: Call) -> object:
        host = httpx.URL(call.url).host
        try:
            async with self._client.stream(
                call.method, call.url, params=call.params, json=call.json, headers=call.headers
            ) as response:
                status = response.status_code
                if status == 429:
                    raise SearchFailed("too_many_requests", f"{host} is rate-limiting searches")
                if status in (400, 422):
                    raise SearchFailed("invalid_tool_input", f"{host} refused the query")
                if status != 200:
                    raise SearchFailed("unavailable", f"{host} answered HTTP {status}")
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > MAX_ANSWER_BYTES:
                        raise SearchFailed("unavailable", f"{host} sent too large an answer")
        except httpx.TimeoutException:
            raise SearchFailed("unavailable", f"{host} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise SearchFailed(
                "unavailable", f"{host} cannot be reached ({type(exc).__name__})"
            ) from None
        try:
            return json.loads(body)
        except ValueError:
            raise SearchFailed("unavailable", f"{host} did not answer JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _replayed(recorded: dict[str, list[list[Result] | SearchFailed]], query: str) -> list[Result]:
    outcomes = recorded.get(query)
    if not outcomes:
        raise SearchFailed(
            "unavailable", "upstream replay: the journal has no search for this query"
        )
    outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
    if isinstance(outcome, SearchFailed):
        raise outcome
    return outcome
