"""Several upstream turns, joined into the one message the client gets (PROTOCOL.md 12.5).

When the model calls the `web_search` function the proxy offered, its turn ends; the proxy
searches and asks the upstream again with the call and its output appended. `SearchTurns` joins
the translated answers of those turns: one `message_start`, block indexes that go on counting,
each search call shown as a `server_tool_use` block followed by its `web_search_tool_result`,
and one closing `message_delta` with the usage of every turn added up. It is the pure part of
the loop (`websearch.loop` does the I/O); a stream and a whole message go through it alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import untrusted, web_search
from .errors import BridgeError
from .source import EventSource
from .web_search import Result, SearchFailed

Event = dict[str, Any]
MAX_TURNS = 10
"""Upstream turns in one client message; a model still searching after that many ends the
message with `pause_turn`, as the API does when a server-tool turn runs long."""
_SUMMED = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


@dataclass
class Search:
    """A search the model asked for in the turn that just ended."""

    id: str
    """Its `server_tool_use` id (the result block's `tool_use_id`)."""
    input: Any = None
    arguments: list[str] = field(default_factory=list)

    def parsed_input(self) -> Any:
        if self.input is not None:
            return self.input
        try:
            return json.loads("".join(self.arguments) or "{}")
        except ValueError:
            return None


class SearchTurns:
    def __init__(self, tool: web_search.SearchTool, max_turns: int = MAX_TURNS) -> None:
        self.tool = tool
        self.max_turns = max_turns
        self.turns = 0
        self.searches = 0
        """Searches run (failed ones are not counted: the API does not bill them)."""
        self.asked = 0
        """Searches the model asked for, for `max_uses`."""
        self.content: list[dict[str, Any]] = []
        """Every block the client has been sent, whole: the assistant turn so far, which the
        next upstream turn continues."""
        self.pending: list[Search] = []
        self.done = False
        self.failure: Event | None = None
        """The `error` event a turn ended with, if one did."""
        self._usage: dict[str, Any] = {}
        self._index: dict[int, int] = {}  # this turn's block index -> the client's
        self._stop: tuple[Any, Any] = (None, None)
        self._client_tools = False
        self._open = False  # a block of this turn is open: blocks of our own wait for its end
        self._waiting: list[Event] = []
        # Streamed citations (`cite`): the spans still waiting for their text, those seen this
        # turn, the characters of this turn's text sent so far (where the upstream counts
        # them), and the open text block (its client index and the position of its start).
        self._cites: list[web_search.Span] = []
        self._seen: set[web_search.Span] = set()
        self._text_at = 0
        self._text: tuple[int, int] | None = None

    # -- a streamed turn -----------------------------------------------------------------

    def feed(self, event: Event) -> list[Event]:
        """One event of the current turn's translated stream -> what the client gets."""
        kind = event.get("type")
        if self.done:
            return []
        if kind == "message_start":
            self.turns += 1
            return [event] if self.turns == 1 else []
        if kind == "content_block_start":
            self._open = True
            started = self._start(event)
            if started["content_block"].get("type") == "text":
                self._text = (started["index"], self._text_at)
            return [started]
        if kind == "content_block_delta":
            index = self._index[event["index"]]
            delta = event["delta"]
            self._grow(self.content[index], delta)
            if delta.get("type") != "text_delta":
                return [{**event, "index": index}]
            self._text_at += len(delta["text"])
            return [{**event, "index": index}, *self._citing()]
        if kind == "content_block_stop":
            self._open = False
            self._text = None
            self._citing()  # only drops the spans this block held but could not be cited
            waiting, self._waiting = self._waiting, []
            return [{**event, "index": self._index[event["index"]]}, *waiting]
        if kind == "message_delta":
            self._end_turn(event.get("usage"), event.get("delta") or {})
            return []
        if kind == "message_stop":
            return []
        if kind == "error":
            self.done = True
            self.failure = event
        return [event]

    def _start(self, event: Event) -> Event:
        block = dict(event["content_block"])
        if block.get("type") == "tool_use" and block.get("name") == web_search.NAME:
            search = Search(web_search.server_id(block["id"]))
            self.pending.append(search)
            block = web_search.server_tool_use(search.id, {})
        elif block.get("type") == "tool_use":
            self._client_tools = True
        self._index[event["index"]] = len(self.content)
        self.content.append(dict(block))  # grows with the deltas; what is sent must not
        return {**event, "index": len(self.content) - 1, "content_block": block}

    def _grow(self, block: dict[str, Any], delta: dict[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta["text"]
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "input_json_delta":
            search = next((s for s in self.pending if s.id == block.get("id")), None)
            if search is not None:
                search.arguments.append(delta["partial_json"])
            else:
                block.setdefault("_json", []).append(delta["partial_json"])

    def cite(self, spans: list[web_search.Span]) -> list[Event]:
        """Spans of this turn's text the upstream says cite a source (streamed annotations,
        which come with or after the text they cite): each becomes a `citations_delta` on the
        open text block holding it as soon as its text has been sent. The text was sent
        already, so it cannot be split into a block of its own as the API does (and as
        `web_search.cited` does for a whole message): the citation goes to the block that
        holds the span, `cited_text` saying which part. A span not inside one text block that
        is still open (or still to come) is left out."""
        for span in spans:
            if span not in self._seen:
                self._seen.add(span)
                self._cites.append(span)
        return self._citing()

    def _citing(self) -> list[Event]:
        out: list[Event] = []
        waiting = []
        for span in self._cites:
            start, end, url, title = span
            if self._text is not None and self._text[1] <= start and end <= self._text_at:
                index, first = self._text
                block = self.content[index]
                citation = web_search.location(
                    block["text"][start - first : end - first], url, title
                )
                block.setdefault("citations", []).append(citation)
                out.append(_delta(index, {"type": "citations_delta", "citation": citation}))
            elif start >= (self._text[1] if self._text is not None else self._text_at):
                waiting.append(span)  # its text is still to come
        self._cites = waiting
        return out

    def upstream_search(self, item: dict[str, Any]) -> list[Event]:
        """A search the upstream ran itself (a Responses `web_search_call` item, done): its
        `server_tool_use` and `web_search_tool_result` blocks, with the sources' URLs when the
        upstream gave them (PROTOCOL.md 12.3)."""
        action = _object(item.get("action"))
        queries = _list(action.get("queries"))
        query = action.get("query") or next(iter(queries), "")
        sources = _list(action.get("sources"))
        urls = [s["url"] for s in sources if isinstance(s, dict) and isinstance(s.get("url"), str)]
        block_id = web_search.server_id(web_search.CLIENT_ID_PREFIX + str(item.get("id") or ""))
        use = web_search.server_tool_use(
            block_id, {"query": query if isinstance(query, str) else ""}
        )
        outcome: list[Result] | SearchFailed = [Result(url, url) for url in urls]
        if item.get("status") == "failed":
            outcome = SearchFailed("unavailable")
        else:
            self.searches += 1
        result = web_search.result_block(block_id, outcome)
        start = len(self.content)
        self.content += [use, result]
        arguments = json.dumps(use["input"])
        events: list[Event] = [
            {"type": "content_block_start", "index": start, "content_block": {**use, "input": {}}},
            _delta(start, {"type": "input_json_delta", "partial_json": arguments}),
            {"type": "content_block_stop", "index": start},
            {"type": "content_block_start", "index": start + 1, "content_block": result},
            {"type": "content_block_stop", "index": start + 1},
        ]
        if self._open:
            self._waiting += events
            return []
        return events

    # -- a whole turn --------------------------------------------------------------------

    def feed_message(self, message: dict[str, Any]) -> None:
        """The current turn's translated (non-streamed) message."""
        self.turns += 1
        for block in message.get("content") or ():
            block = dict(block)
            if block.get("type") == "tool_use" and block.get("name") == web_search.NAME:
                search = Search(web_search.server_id(block["id"]), block.get("input"))
                self.pending.append(search)
                block = web_search.server_tool_use(search.id, search.parsed_input())
            elif block.get("type") == "tool_use":
                self._client_tools = True
            self.content.append(block)
        stop = {"stop_reason": message.get("stop_reason")}
        self._end_turn(
            message.get("usage"), {**stop, "stop_sequence": message.get("stop_sequence")}
        )

    def message(self, first: dict[str, Any]) -> dict[str, Any]:
        """The client's message: `first` (the first turn's) with every turn's content."""
        reason, sequence = self._final_stop()
        content = [_sent(block) for block in self.content]
        return {
            **first,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": self.usage(),
        }

    # -- between turns -------------------------------------------------------------------

    def _end_turn(self, usage: Any, delta: dict[str, Any]) -> None:
        for key, value in (usage or {}).items():
            if key in _SUMMED and isinstance(value, int):
                self._usage[key] = self._usage.get(key, 0) + value
            else:
                self._usage[key] = value
        self._stop = (delta.get("stop_reason"), delta.get("stop_sequence"))
        self._index = {}
        self._cites, self._seen, self._text_at, self._text = [], set(), 0, None
        for search in self.pending:  # their input is whole now
            for block in self.content:
                if block.get("id") == search.id:
                    block["input"] = search.parsed_input()

    @property
    def searching(self) -> bool:
        """The turn that ended asked for searches, which `searched` must now answer (unless
        it was the last turn allowed: the message then ends with `pause_turn`)."""
        return bool(self.pending) and not self.done and self.turns < self.max_turns

    @property
    def continues(self) -> bool:
        """After `searched`: the upstream gets another turn; not when the model also called
        client tools (the client runs those, and the message ends with `tool_use`)."""
        return not self.done and not self._client_tools

    def queries(self) -> list[tuple[Search, str | SearchFailed]]:
        """Each pending search with the query to run, or why it is not run."""
        out: list[tuple[Search, str | SearchFailed]] = []
        for search in self.pending:
            self.asked += 1
            limit = self.tool.max_uses
            if limit is not None and self.asked > limit:
                out.append((search, SearchFailed("max_uses_exceeded", _LIMIT.format(limit))))
                continue
            try:
                out.append((search, web_search.checked_query(search.parsed_input())))
            except SearchFailed as failed:
                out.append((search, failed))
        return out

    def searched(self, outcomes: list[tuple[Search, list[Result] | SearchFailed]]) -> list[Event]:
        """The result blocks of the pending searches, as stream events."""
        events: list[Event] = []
        for search, outcome in outcomes:
            if not isinstance(outcome, SearchFailed):
                self.searches += 1
            block = web_search.result_block(search.id, outcome)
            index = len(self.content)
            # What the model reads next turn; the client's copy has no `detail`.
            self.content.append(_with_detail(block, outcome))
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            events.append({"type": "content_block_stop", "index": index})
        self.pending = []
        return events

    def next_turn(self) -> None:
        self._client_tools = False

    # -- the end -------------------------------------------------------------------------

    def _final_stop(self) -> tuple[Any, Any]:
        if self.pending:  # the turn cap came with searches still asked for
            return "pause_turn", None
        if self._client_tools:
            return "tool_use", None
        return self._stop

    def usage(self) -> dict[str, Any]:
        return web_search.with_search_usage(self._usage, self.searches)

    def finish(self) -> list[Event]:
        """The closing events of a streamed message."""
        self.done = True
        reason, sequence = self._final_stop()
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        return [
            {"type": "message_delta", "delta": delta, "usage": self.usage()},
            {"type": "message_stop"},
        ]

    def continuation(self) -> dict[str, Any]:
        """The assistant message the next upstream turn continues from."""
        return {"role": "assistant", "content": [_sent(b, keep_detail=True) for b in self.content]}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _delta(index: int, delta: dict[str, Any]) -> Event:
    return {"type": "content_block_delta", "index": index, "delta": delta}


class TurnSource:
    """One upstream turn's translator (`EventSource`), its events joined into the answer."""

    def __init__(self, inner: EventSource, turns: SearchTurns) -> None:
        self._inner = inner
        self._turns = turns

    @property
    def done(self) -> bool:
        return self._inner.done

    @property
    def upstream_usage(self) -> dict[str, Any] | None:
        return self._inner.upstream_usage

    def start(self) -> list[Event]:
        return self._join(self._inner.start())

    def feed_data(self, data: str) -> list[Event]:
        early: list[Event] = []
        if "url_citation" in data or '"web_search_call"' in data:
            early = self._skipped(data)
        return early + self._join(self._inner.feed_data(data))

    def _skipped(self, data: str) -> list[Event]:
        """What the inner translator skips: the upstream's own search, its citations. (Spans
        of text this same event carries are cited once the inner translator sent it.)"""
        try:
            event = untrusted.event(data)
        except untrusted.TooDeep:
            return []  # the inner translator fails the stream on it
        if event is None:
            return []
        item = event.get("item")
        if event.get("type") == "response.output_item.done" and isinstance(item, dict):
            return (
                self._turns.upstream_search(item) if item.get("type") == "web_search_call" else []
            )
        return self._turns.cite(web_search.streamed_citations(event))

    def finish(self) -> list[Event]:
        return self._join(self._inner.finish())

    def fail(self, error: BridgeError) -> list[Event]:
        return self._join(self._inner.fail(error))

    def _join(self, events: list[Event]) -> list[Event]:
        return [out for event in events for out in self._turns.feed(event)]


def message_events(message: dict[str, Any]) -> list[Event]:
    """A whole message as the events of its stream (for an answer made without the upstream)."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[Event] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
            events.append({"type": "content_block_start", "index": index, "content_block": opened})
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        elif block["type"] == "server_tool_use":
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            events.append({"type": "content_block_start", "index": index, "content_block": opened})
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        else:  # a result block comes whole, as the API sends it
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append({"type": "message_delta", "delta": delta, "usage": message["usage"]})
    events.append({"type": "message_stop"})
    return events


def unanswered(
    tool: web_search.SearchTool, first: dict[str, Any], query: str, failed: SearchFailed
) -> dict[str, Any]:
    """The whole answer to a request that only asks for a search (Claude Code's WebSearch side
    request) when no search can be run: the search, its error, and the reason in words. The
    upstream is not asked: all it could add is a guess at the results."""
    turns = SearchTurns(tool)
    call = {"type": "tool_use", "id": "toolu_" + first["id"], "name": web_search.NAME}
    turns.feed_message({**first, "content": [{**call, "input": {"query": query}}]})
    ((search, _),) = turns.queries()
    turns.searched([(search, failed)])
    text = f"Web search is not available: {failed.detail or failed.code}."
    turns.feed_message(
        {**first, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
    )
    return turns.message(first)


_LIMIT = "the limit of {} searches for this answer is reached: answer with the results you have"


def _with_detail(block: dict[str, Any], outcome: list[Result] | SearchFailed) -> dict[str, Any]:
    if isinstance(outcome, SearchFailed) and outcome.detail:
        return {**block, "content": {**block["content"], "detail": outcome.detail}}
    return block


def _sent(block: dict[str, Any], keep_detail: bool = False) -> dict[str, Any]:
    """A block as it is sent: a tool call's input parsed from its streamed JSON; a result's
    `detail` (for the model only) left out unless `keep_detail`."""
    block = dict(block)
    pieces = block.pop("_json", None)
    if pieces is not None:
        try:
            block["input"] = json.loads("".join(pieces) or "{}")
        except ValueError:
            block["input"] = {}
    content = block.get("content")
    if not keep_detail and isinstance(content, dict) and "detail" in content:
        block["content"] = {k: v for k, v in content.items() if k != "detail"}
    return block
