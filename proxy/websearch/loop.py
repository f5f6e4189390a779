"""The search loop: one client message made of as many upstream turns as the model searches.

The model calls the `web_search` function; its turn ends; the proxy searches (pings keep the
client's stream alive meanwhile), shows the client the `server_tool_use` and
`web_search_tool_result` blocks, appends the call and its output to the conversation and asks
the upstream again, until the model answers. `core.search_turns` joins the turns; the upstream
I/O of each turn is the pipeline's (`Turns`), so retries, stalls, accounting and recording work
as for any request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from ..core.errors import BridgeError
from ..core.search_turns import Search, SearchTurns
from ..core.web_search import Result, SearchFailed, SearchTool
from ..models.anthropic import Message, MessagesRequest
from .searcher import Searcher

log = logging.getLogger("claude_bridge.websearch")

Event = dict[str, Any]
Outcome = list[Result] | SearchFailed


class Turns(Protocol):
    """One more upstream turn for a request, translated: the pipeline's side of the loop."""

    def stream(self, request: MessagesRequest) -> Awaitable[AsyncIterator[Event]]:
        """The turn's events; opened before it returns (a refusal raises `BridgeError`)."""
        ...

    async def complete(self, request: MessagesRequest) -> dict[str, Any]: ...


Noted = Callable[[str, Outcome, float], None]
"""Told of each search run: (query, outcome, seconds), for the exchange and the logs."""


def continued(request: MessagesRequest, turns: SearchTurns) -> MessagesRequest:
    """The request of the next upstream turn: the client's, with what the answer holds so
    far as the assistant's (the searches as calls with their outputs, once translated)."""
    message = Message.model_validate(turns.continuation())
    return request.model_copy(update={"messages": [*request.messages, message]})


async def run_searches(
    turns: SearchTurns, searcher: Searcher, noted: Noted
) -> list[tuple[Search, Outcome]]:
    """The searches the turn asked for, at once; each failure is its own outcome."""

    async def one(query: str | SearchFailed) -> Outcome:
        if isinstance(query, SearchFailed):
            return query
        started = time.monotonic()
        try:
            outcome: Outcome = await searcher.search(query, turns.tool)
        except SearchFailed as failed:
            outcome = failed
        noted(query, outcome, time.monotonic() - started)
        return outcome

    asked = turns.queries()
    outcomes = await asyncio.gather(*(one(query) for _, query in asked))
    return [(search, outcome) for (search, _), outcome in zip(asked, outcomes, strict=True)]


async def stream(
    request: MessagesRequest,
    tool: SearchTool,
    first: AsyncIterator[Event],
    turns: Turns,
    searcher: Searcher,
    ping_interval: float,
    noted: Noted,
) -> AsyncIterator[Event]:
    """The client's events: `first` (the first turn, already opened), then as many turns as
    the searches take."""
    joined = SearchTurns(tool)
    events = first
    while True:
        async for event in events:
            for out in joined.feed(event):
                yield out
        if joined.done:
            return
        if not joined.searching:
            break
        task = asyncio.ensure_future(run_searches(joined, searcher, noted))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=ping_interval)
                if not task.done():
                    yield {"type": "ping"}  # Claude Code gives up on a quiet stream
        finally:
            task.cancel()
        for out in joined.searched(task.result()):
            yield out
        if not joined.continues:
            break
        joined.next_turn()
        try:
            events = await turns.stream(continued(request, joined))
        except BridgeError as error:
            yield error.event()
            return
    for out in joined.finish():
        yield out


async def complete(
    request: MessagesRequest,
    tool: SearchTool,
    first: dict[str, Any],
    turns: Turns,
    searcher: Searcher,
    noted: Noted,
) -> dict[str, Any]:
    """The client's message: `first` (the first turn's), then as many turns as the searches
    take. A turn that fails fails the request, as a one-turn request would."""
    joined = SearchTurns(tool)
    message = first
    while True:
        joined.feed_message(message)
        if not joined.searching:
            break
        joined.searched(await run_searches(joined, searcher, noted))
        if not joined.continues:
            break
        joined.next_turn()
        message = await turns.complete(continued(request, joined))
    return joined.message(first)
