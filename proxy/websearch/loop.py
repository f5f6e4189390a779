"""The search loop: one client message made of as many upstream turns as the model searches.

The model calls the `web_search` function; its turn ends; the proxy searches (pings keep the
client's stream alive meanwhile), shows the client the `server_tool_use` and
`web_search_tool_result` blocks, appends the call and its output to the conversation, plans the
request again for the same upstream, model, dialect and message id (`plan.plan`), and asks
again, until the model answers. `core.search_turns` joins the turns; each streamed turn goes
through the pipeline's relay (stalls, pings, drain, accounting of what streams), which leaves
ending the exchange to this loop.

Failover. The first turn goes through the pipeline's attempt loop as any request does
(`Pipeline.answered`, `Pipeline.opened`): along the route's chain of targets and their keys,
until one answers, before anything reaches the client. Every later turn stays on the target
that answered the first one: its other keys are tried (the same model behind another key is
invisible to the client), another target never is, streamed or not, even before the later
turn's own first byte:
- the client has the message's start and its blocks so far (a stream), written by that model:
  another would continue a half-answer it did not write, in what the client reads as one
  message from one model, and the provider's own carriers in the history (reasoning
  signatures, thought signatures in tool ids) mean nothing to another provider;
- a whole answer (JSON) could start over elsewhere, but that would run its searches again;
- the exchange names one upstream and model (dashboard, journal, price).
A later turn's attempts join the exchange's only when that turn took more than one, or
failed: a two-turn answer with no failure did not take "2 tries".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
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
from ..resilience.failover import Attempt, failed_over
from .searcher import Searcher

if TYPE_CHECKING:
    import httpx

    from ..pipeline import Pipeline, Prepared

log = logging.getLogger("claude_bridge.websearch")
# A tool of type `web_search_<date>` in a JSON body (quotes inside strings are escaped, so this
# is structure): the cheap test before a body not read yet is read.
_SEARCH_TOOL = re.compile(rb'"type"\s*:\s*"web_search_\d')

Event = dict[str, Any]
Outcome = list[Result] | SearchFailed


@dataclass(frozen=True)
class Searching:
    """A request with a `web_search` tool, for a translated upstream: what the next turns are
    planned from."""

    asked: Asked
    tool: SearchTool
    side_query: str | None
    """Claude Code's WebSearch side request: its query (answered without the model when no
    backend is configured)."""
    native: bool = False
    """The upstream searches itself (`backend = "upstream"`): its searches are shown as the
    proxy's are, its citations mapped; the proxy runs none."""


def searching(
    asked: Asked | bytes, planned: Plan, headers: Mapping[str, str], settings: Settings
) -> Searching | None:
    """Whether this request's searches go through the loop: it has a `web_search` tool and goes
    to a translated upstream (that searches itself, `native`, or not). `asked`: the client's
    body, read already, or raw (then read only if it has such a tool)."""
    if planned.dialect == "anthropic":
        return None
    if isinstance(asked, bytes):
        if not _SEARCH_TOOL.search(asked):
            return None
        asked = read(asked, headers)
    tool = web_search.search_tool(asked.request.tools or ())
    if tool is None:
        return None
    options = planned.options
    native = web_search.native(options.native_web_search, planned.dialect, options.profile.name)
    side = web_search.side_request_query(asked.request)
    return Searching(asked, tool, side, native)


def _again(
    pipeline: Pipeline, prepared: Prepared, turns: SearchTurns, exchange: Exchange
) -> Prepared:
    """The next turn: the client's request with what the answer holds so far as the
    assistant's (the searches become calls with their outputs once translated), for the
    target that answered the first turn and no other (the module's docstring)."""
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
    headers = prepared.client_headers
    again = plan(
        asked,
        pipeline.settings,
        pipeline._endpoints,
        headers,
        to=replace(first.route, fallbacks=()),
        dialect=first.speaker,
        message_id=first.ctx.message_id,
    )
    return replace(prepared, plan=again, call=pipeline.call(again, headers))


@contextlib.contextmanager
def _kept(exchange: Exchange) -> Iterator[list[Attempt]]:
    """A later turn's attempts, joining the exchange's only if they tell something."""
    tried: list[Attempt] = []
    try:
        yield tried
    finally:
        if failed_over(tried):
            exchange.attempts.extend(tried)


def turn_usage(exchange: Exchange, usage: Any) -> None:
    """One upstream turn's own usage added to the exchange's (reasoning tokens, the cost the
    upstream reported): an answer of several turns cost them all."""
    exchange.reasoning_tokens += reasoning_tokens(usage)
    cost = reported_cost(usage)
    if cost is not None:
        exchange.upstream_cost = (exchange.upstream_cost or 0.0) + cost


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


def shortcut(pipeline: Pipeline, prepared: Prepared, exchange: Exchange) -> dict[str, Any] | None:
    """The answer to Claude Code's side request when there is no backend to search with (the
    upstream is not asked: all it could add is a guess at the results); None for any other
    request."""
    found = prepared.searching
    if found is None or found.side_query is None or found.native or pipeline.searcher.runs:
        return None
    first = message_start(prepared.plan.ctx)[0]["message"]
    failed = SearchFailed("unavailable", pipeline.searcher.unavailable)
    answer = unanswered(found.tool, first, found.side_query, failed)
    exchange.first_byte = pipeline.clock()
    _noted(exchange, "", failed, 0.0)
    _tally(exchange, answer)
    return answer


async def whole(
    pipeline: Pipeline, answer: dict[str, Any], exchange: Exchange
) -> AsyncGenerator[bytes, None]:
    """A `shortcut` answer, streamed."""
    try:
        yield _encode(message_events(answer))
    finally:
        pipeline.end(exchange, 200)


# -- streamed --------------------------------------------------------------------------------


def stream(
    pipeline: Pipeline,
    prepared: Prepared,
    stack: AsyncExitStack,
    response: httpx.Response,
    exchange: Exchange,
) -> AsyncGenerator[bytes, None]:
    """`Pipeline.open_stream` for a request whose searches the proxy runs, once the first
    turn's upstream stream is open (`prepared`: for the target that answered)."""
    assert prepared.searching is not None
    turns = SearchTurns(prepared.searching.tool)
    first = _relayed(pipeline, prepared, stack, response, turns, exchange)
    return _stream(pipeline, prepared, turns, first, exchange)


def _relayed(
    pipeline: Pipeline,
    turn: Prepared,
    stack: AsyncExitStack,
    response: httpx.Response,
    turns: SearchTurns,
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    upstream = turn.upstream
    source = TurnSource(event_source(turn.plan), turns)
    return pipeline._relay(stack, upstream, upstream.chunks(response), source, exchange, ends=False)


async def _stream(
    pipeline: Pipeline,
    prepared: Prepared,
    turns: SearchTurns,
    relay: AsyncIterator[bytes],
    exchange: Exchange,
) -> AsyncGenerator[bytes, None]:
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
            turn = _again(pipeline, prepared, turns, exchange)
            try:
                with _kept(exchange) as tried:
                    stack, response, turn = await pipeline.opened(turn, exchange, tried)
            except BridgeError as exc:
                error, ended = exc, True
                yield _encode([exc.event()])
                return
            relay = _relayed(pipeline, turn, stack, response, turns, exchange)
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


async def complete(
    pipeline: Pipeline, prepared: Prepared, data: Any, exchange: Exchange
) -> dict[str, Any]:
    """`Pipeline.complete` for a request whose searches the proxy runs, once the first turn
    answered `data` (`prepared`: for the target that answered). A later turn that fails fails
    the request, as a one-turn request would."""
    assert prepared.searching is not None
    turns = SearchTurns(prepared.searching.tool)
    first = message = _read(prepared.plan, data, turns, exchange)
    while True:
        turns.feed_message(message)
        if not turns.searching:
            break
        turns.searched(await _search_all(turns, pipeline.searcher, exchange))
        if not turns.continues:
            break
        turns.next_turn()
        turn = _again(pipeline, prepared, turns, exchange)
        with _kept(exchange) as tried:
            data, turn = await pipeline.answered(turn, exchange, tried)
        message = _read(turn.plan, data, turns, exchange)
    answer = turns.message(first)
    _tally(exchange, answer)
    return answer


def _read(planned: Plan, data: Any, turns: SearchTurns, exchange: Exchange) -> dict[str, Any]:
    """One turn's whole answer, translated, its citations mapped and its usage counted."""
    turn_usage(exchange, upstream_usage(data, planned))
    message = reply_message(data, planned)
    web_search.cited(message, web_search.url_citations(data))
    for item in web_search.upstream_calls(data):  # the upstream's own, before its answer
        turns.upstream_search(item)
    return message
