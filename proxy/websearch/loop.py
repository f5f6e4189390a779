"""The search loop: one client message made of as many upstream turns as the model searches.

The model calls the `web_search` function; its turn ends; the proxy searches (pings keep the
client's stream alive meanwhile), shows the client the `server_tool_use` and
`web_search_tool_result` blocks, appends the call and its output to the conversation, plans the
request again for the same upstream, model, dialect and message id (`plan.plan`), and asks
again, until the model answers. `core.search_turns` joins the turns; each streamed turn goes
through the pipeline's relay (stalls, pings, drain, accounting of what streams), which leaves
ending the exchange to this loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..core import web_search
from ..core.context import message_start
from ..core.errors import BridgeError
from ..core.search_turns import (
    Search,
    SearchTurns,
    TurnSource,
    message_events,
    unanswered,
)
from ..core.sse import encode_event
from ..core.usage import reasoning_tokens, reported_cost
from ..core.web_search import Result, SearchFailed, SearchTool
from ..events import Exchange
from ..models.anthropic import Message
from ..plan import Asked, Plan, event_source, plan, read, reply_message, upstream_usage
from .searcher import Searcher

if TYPE_CHECKING:
    from ..pipeline import Pipeline, Prepared
    from ..upstream import Call

log = logging.getLogger("claude_bridge.websearch")
# A tool of type `web_search_<date>` in a JSON body (quotes inside strings are escaped, so this
# is structure): the cheap test before the body is read again.
_SEARCH_TOOL = re.compile(rb'"type"\s*:\s*"web_search_\d')

Event = dict[str, Any]
Outcome = list[Result] | SearchFailed


@dataclass(frozen=True)
class Searching:
    """A request with a `web_search` tool, for a translated upstream: what the next turns are
    planned from."""

    asked: Asked
    tool: SearchTool
    headers: dict[str, str]
    side_query: str | None
    """Claude Code's WebSearch side request: its query (answered without the model when no
    backend is configured)."""
    native: bool = False
    """The upstream searches itself (`backend = "upstream"`): its searches are shown as the
    proxy's are, its citations mapped; the proxy runs none."""


def searching(
    raw: bytes, planned: Plan, headers: Mapping[str, str], settings: Settings
) -> Searching | None:
    """Whether this request's searches go through the loop: it has a `web_search` tool and goes
    to a translated upstream (that searches itself, `native`, or not)."""
    if planned.dialect == "anthropic" or not _SEARCH_TOOL.search(raw):
        return None
    options = planned.options
    native = web_search.native(options.native_web_search, planned.dialect, options.profile.name)
    asked = read(raw, headers)
    tool = web_search.search_tool(asked.request.tools or ())
    if tool is None:
        return None
    side = web_search.side_request_query(asked.request)
    return Searching(asked, tool, dict(headers), side, native)


def _again(
    pipeline: Pipeline, prepared: Prepared, turns: SearchTurns, exchange: Exchange
) -> tuple[Plan, Call]:
    """The next turn's plan and call: the client's request with what the answer holds so far
    as the assistant's (the searches become calls with their outputs once translated)."""
    if exchange.trace is not None:
        exchange.trace.next_turn()
    found = prepared.searching
    assert found is not None
    request = found.asked.request
    message = Message.model_validate(turns.continuation())
    asked = replace(
        found.asked, request=request.model_copy(update={"messages": [*request.messages, message]})
    )
    first = prepared.plan
    again = plan(
        asked,
        pipeline.settings,
        pipeline._endpoints,
        found.headers,
        to=first.route,
        dialect=first.speaker,
        message_id=first.ctx.message_id,
    )
    return again, pipeline.call(again, found.headers)


async def _search_all(
    turns: SearchTurns, searcher: Searcher, exchange: Exchange
) -> list[tuple[Search, Outcome]]:
    """The searches the turn asked for, at once; a failure is that search's outcome."""

    async def one(query: str | SearchFailed) -> Outcome:
        if isinstance(query, SearchFailed):
            return query
        started = time.monotonic()
        try:
            outcome: Outcome = await searcher.search(query, turns.tool)
        except SearchFailed as failed:
            outcome = failed
        except Exception:  # whatever broke, the answer goes on with an error result
            log.exception("web search failed", extra={"request_id": exchange.id})
            outcome = SearchFailed("unavailable", "the search failed inside claude-bridge")
        _noted(exchange, query, outcome, time.monotonic() - started)
        return outcome

    asked = turns.queries()
    outcomes = await asyncio.gather(*(one(query) for _, query in asked))
    return [(search, outcome) for (search, _), outcome in zip(asked, outcomes, strict=True)]


def _noted(exchange: Exchange, query: str, outcome: Outcome, seconds: float) -> None:
    exchange.searches += 1
    extra = {"request_id": exchange.id}
    if isinstance(outcome, SearchFailed):
        exchange.search_failures += 1
        log.warning("web search failed (%s): %s", outcome.code, outcome.detail, extra=extra)
    else:
        log.info("web search: %d results in %.2f s", len(outcome), seconds, extra=extra)
    log.debug("web search query: %s", query, extra=extra)


def _tally(exchange: Exchange, message: dict[str, Any]) -> None:
    """The exchange's counts from the joined answer (every turn's usage added up)."""
    usage = message.get("usage") or {}
    exchange.input_tokens = usage.get("input_tokens", exchange.input_tokens)
    exchange.output_tokens = usage.get("output_tokens", exchange.output_tokens)
    exchange.cached_tokens = usage.get("cache_read_input_tokens", exchange.cached_tokens)
    exchange.cache_write_tokens = usage.get("cache_creation_input_tokens", 0)
    exchange.stop_reason = message.get("stop_reason") or exchange.stop_reason


def _unanswered(pipeline: Pipeline, prepared: Prepared) -> dict[str, Any] | None:
    """The answer to Claude Code's side request when there is no backend to search with."""
    found = prepared.searching
    if found is None or found.side_query is None or found.native or pipeline.searcher.runs:
        return None
    first = message_start(prepared.plan.ctx)[0]["message"]
    failed = SearchFailed("unavailable", pipeline.searcher.unavailable)
    return unanswered(found.tool, first, found.side_query, failed)


# -- streamed --------------------------------------------------------------------------------


async def open_stream(
    pipeline: Pipeline, prepared: Prepared, exchange: Exchange
) -> AsyncIterator[bytes]:
    """`Pipeline.open_stream` for a request whose searches the proxy runs: the first turn is
    opened before this returns, so that a refusal is still a real HTTP error."""
    answer = _unanswered(pipeline, prepared)
    if answer is not None:
        return _whole(pipeline, answer, exchange)
    assert prepared.searching is not None
    turns = SearchTurns(prepared.searching.tool)
    first = await _open_turn(pipeline, prepared, prepared.plan, prepared.call, turns, exchange)
    return _stream(pipeline, prepared, turns, first, exchange)


async def _whole(
    pipeline: Pipeline, answer: dict[str, Any], exchange: Exchange
) -> AsyncIterator[bytes]:
    exchange.first_byte = pipeline.clock()
    _noted(exchange, "", SearchFailed("unavailable", pipeline.searcher.unavailable), 0.0)
    _tally(exchange, answer)
    try:
        yield _encode(message_events(answer))
    finally:
        pipeline.end(exchange, 200)


async def _open_turn(
    pipeline: Pipeline,
    prepared: Prepared,
    planned: Plan,
    call: Call,
    turns: SearchTurns,
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    upstream = prepared.upstream
    stack = AsyncExitStack()
    async with pipeline.drain.guard():
        with pipeline._sized(prepared, exchange):
            response = await stack.enter_async_context(upstream.stream(call))
    source = TurnSource(event_source(planned), turns)
    return pipeline._relay(stack, upstream, upstream.chunks(response), source, exchange, ends=False)


async def _stream(
    pipeline: Pipeline,
    prepared: Prepared,
    turns: SearchTurns,
    relay: AsyncIterator[bytes],
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    error: BridgeError | None = None
    ended = False
    try:
        while True:
            async for data in relay:
                yield data
            if turns.done:
                error = _failure(turns)
                ended = True
                return
            if not turns.searching:
                break
            task = asyncio.ensure_future(_search_all(turns, pipeline.searcher, exchange))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=pipeline.settings.ping_interval)
                    if not task.done():  # Claude Code gives up on a quiet stream
                        exchange.pings += 1
                        yield _encode([{"type": "ping"}])
            finally:
                task.cancel()
            yield _encode(turns.searched(task.result()))
            if not turns.continues:
                break
            turns.next_turn()
            again, call = _again(pipeline, prepared, turns, exchange)
            try:
                relay = await _open_turn(pipeline, prepared, again, call, turns, exchange)
            except BridgeError as exc:
                error, ended = exc, True
                yield _encode([exc.event()])
                return
        final = turns.finish()
        _tally(exchange, {"usage": turns.usage(), "stop_reason": final[0]["delta"]["stop_reason"]})
        ended = True
        yield _encode(final)
    finally:
        if not ended and not exchange.cancelled:
            exchange.cancelled = True  # the client left between turns
            exchange.output_tokens = exchange.output_so_far
        pipeline.end(exchange, 200, error)


def _failure(turns: SearchTurns) -> BridgeError:
    detail = (turns.failure or {}).get("error") or {}
    return BridgeError(
        str(detail.get("message") or "upstream error"), type=str(detail.get("type") or "api_error")
    )


def _encode(events: list[Event]) -> bytes:
    return b"".join(encode_event(event) for event in events)


# -- not streamed ----------------------------------------------------------------------------


async def complete(pipeline: Pipeline, prepared: Prepared, exchange: Exchange) -> dict[str, Any]:
    """`Pipeline.complete` for a request whose searches the proxy runs. A turn that fails fails
    the request, as a one-turn request would."""
    answer = _unanswered(pipeline, prepared)
    if answer is not None:
        _noted(exchange, "", SearchFailed("unavailable", pipeline.searcher.unavailable), 0.0)
        exchange.first_byte = pipeline.clock()
    else:
        assert prepared.searching is not None
        turns = SearchTurns(prepared.searching.tool)
        first = message = await _turn(
            pipeline, prepared, prepared.plan, prepared.call, turns, exchange
        )
        while True:
            turns.feed_message(message)
            if not turns.searching:
                break
            turns.searched(await _search_all(turns, pipeline.searcher, exchange))
            if not turns.continues:
                break
            turns.next_turn()
            again, call = _again(pipeline, prepared, turns, exchange)
            message = await _turn(pipeline, prepared, again, call, turns, exchange)
        answer = turns.message(first)
    _tally(exchange, answer)
    if exchange.trace is not None:
        exchange.trace.client_message(answer)
    return answer


async def _turn(
    pipeline: Pipeline,
    prepared: Prepared,
    planned: Plan,
    call: Call,
    turns: SearchTurns,
    exchange: Exchange,
) -> dict[str, Any]:
    async with pipeline.drain.guard():
        with pipeline._sized(prepared, exchange):
            data = await prepared.upstream.complete(call)
    if exchange.first_byte is None:
        exchange.first_byte = pipeline.clock()
    usage = upstream_usage(data, planned)
    exchange.reasoning_tokens += reasoning_tokens(usage)
    cost = reported_cost(usage)
    if cost is not None:
        exchange.upstream_cost = (exchange.upstream_cost or 0.0) + cost
    message = reply_message(data, planned)
    web_search.cited(message, web_search.url_citations(data))
    for item in web_search.upstream_calls(data):  # the upstream's own, before its answer
        turns.upstream_search(item)
    return message
