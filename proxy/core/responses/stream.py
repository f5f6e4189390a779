"""Responses API stream events -> Anthropic stream events (PROTOCOL.md 10.7, 10.10).

`ResponsesStreamTranslator` shares `StreamTranslator`'s base (`source.Translator`), so the relay
drives either alike. A state machine keyed on `output_index`: each item opens its block when it
has something to show, and closes it at `response.output_item.done`, which carries what only it
has (the reasoning's final `encrypted_content`; the arguments of servers that stream none).
Content and stop reason follow `reply.py`, so a streamed and a JSON answer to the same reply say
the same thing.

The stream ends with `response.completed` or `response.incomplete` (there is no `[DONE]`);
`response.failed` and `error` events become an Anthropic `error` event, and so does a body that
ends before any of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..context import ReplyContext
from ..errors import UpstreamError
from ..ids import proxy_signature
from ..nulls import NullFilter
from ..source import Translator, block_delta
from ..stream import Arguments  # the chat dialect's live argument validator
from .carrier import Kind
from .output import (
    Block,
    carried_signature,
    chat_usage,
    failure,
    output_blocks,
    part_text,
    reasoning_blocks,
    stop,
    text_of,
    tool_id,
)
from .reply import GENERIC_SCOPE

Event = dict[str, Any]
Owner = tuple[int, int]
"""Whose block is open: (output_index, content_index); -1 for a whole item's block."""


@dataclass
class _Item:
    index: int
    kind: str
    # reasoning: the summary or reasoning_text part that gave text last; all its text
    part: int | None = None
    thinking: list[str] = field(default_factory=list)
    source: Kind = "s"  # summaries, or the clear reasoning_text of open-weight servers
    final: dict[str, Any] | None = None  # the item as `output_item.done` gave it
    shown: bool = False  # a block of it went out
    # message: the content parts that gave text
    parts: set[int] = field(default_factory=set)
    # function_call
    call_id: str = ""
    name: str = ""
    arguments: Arguments = field(default_factory=Arguments)
    raw: list[str] = field(default_factory=list)  # the argument text as it came
    sent: bool = False  # a piece of the arguments went out
    position: int = -1  # among the reply's tool calls, once its block opened


class ResponsesStreamTranslator(Translator):
    def __init__(self, ctx: ReplyContext, *, scope: str = GENERIC_SCOPE) -> None:
        super().__init__(ctx)
        self._scope = scope
        self._filter = NullFilter(ctx.added_nulls)
        self._index = -1  # of the newest block
        self._open: str | None = None  # type of the open block
        self._owner: Owner | None = None
        self._items: dict[int, _Item] = {}
        self._ids: dict[str, int] = {}  # item id -> output_index
        self._calls = 0
        self._text = False
        self._refusal = False

    def feed(self, event: dict[str, Any]) -> list[Event]:
        if self._done:
            return []
        return self._filter(self._event(event))

    def finish(self) -> list[Event]:
        """The upstream body ended; before a terminal event the reply was cut off."""
        if self._done:
            return []
        return self.fail(UpstreamError("upstream stream ended before the reply was complete"))

    def _out(self, events: list[Event]) -> list[Event]:
        return self._filter(events)  # blocks that may hold added nulls go whole, cleaned

    # -- events --------------------------------------------------------------------------

    def _event(self, event: dict[str, Any]) -> list[Event]:
        kind = event.get("type")
        if kind == "error" or (kind is None and event.get("error")):
            return self._fail(failure(event))
        out = self._start()
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        if kind in ("response.completed", "response.incomplete"):
            return out + self._end(response)
        if kind == "response.failed":
            return out + self._fail(failure(response.get("error") or response))
        handler = _HANDLERS.get(str(kind))
        if handler is not None:
            handler(self, event, out)
        return out  # unknown events (audio, MCP, web search progress...) are skipped

    def _item(self, event: dict[str, Any], kind: str) -> _Item:
        """The item an event is about, by `output_index`, else by `item_id`; created when a
        server skipped its `output_item.added`."""
        index = event.get("output_index")
        item_id = text_of(event.get("item_id"))
        if not isinstance(index, int) or isinstance(index, bool):
            index = self._ids.get(item_id, len(self._items))
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = _Item(index, kind)
        if item_id:
            self._ids[item_id] = index
        return item

    def _added(self, event: dict[str, Any], out: list[Event]) -> None:
        data = event.get("item")
        data = data if isinstance(data, dict) else {}
        item = self._item({**event, "item_id": data.get("id")}, text_of(data.get("type")))
        item.kind = text_of(data.get("type")) or item.kind
        if item.kind == "function_call":
            self._call_fields(item, data)
            self._feed_arguments(item, text_of(data.get("arguments")), out)

    def _item_done(self, event: dict[str, Any], out: list[Event]) -> None:
        data = event.get("item")
        data = data if isinstance(data, dict) else {}
        item = self._item({**event, "item_id": data.get("id")}, text_of(data.get("type")))
        kind = text_of(data.get("type")) or item.kind
        if kind == "reasoning":
            item.final = data
            if self._owner == (item.index, -1):
                self._close(out)
            elif not item.shown:  # nothing streamed: the whole item now
                for block in reasoning_blocks(data, self._scope):
                    self._chars += len(block.get("thinking", ""))
                    self._whole(block, out)
        elif kind == "message":
            content = data.get("content")
            for position, part in enumerate(content if isinstance(content, list) else ()):
                if isinstance(part, dict):
                    self._fill(item, position, part, out)
            if self._owner is not None and self._owner[0] == item.index:
                self._close(out)
        elif kind == "function_call":
            self._call_fields(item, data)
            self._final_arguments(item, data.get("arguments"), out)
            self._open_call(item, out)
            if self._owner == (item.index, -1):
                self._close(out)

    # -- reasoning -----------------------------------------------------------------------

    def _reasoning_delta(self, event: dict[str, Any], out: list[Event]) -> None:
        item = self._item(event, "reasoning")
        part = event.get("summary_index", event.get("content_index", 0))
        if event.get("type") == "response.reasoning_text.delta":
            item.source = "t"
        self._reasoning(item, part, text_of(event.get("delta")), out)

    def _reasoning_done(self, event: dict[str, Any], out: list[Event]) -> None:
        item = self._item(event, "reasoning")
        part = event.get("summary_index", event.get("content_index", 0))
        if event.get("type") == "response.reasoning_text.done":
            item.source = "t"
        if part != item.part or not item.thinking:  # no delta came for this part
            self._reasoning(item, part, text_of(event.get("text")), out)

    def _reasoning(self, item: _Item, part: Any, text: str, out: list[Event]) -> None:
        if not text or item.final is not None:
            return
        if item.thinking and part != item.part:
            text = "\n\n" + text  # the next summary part, as `output.reasoning_text` joins them
        item.part = part if isinstance(part, int) else 0
        if self._owner != (item.index, -1):
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._begin("thinking", block, (item.index, -1), out)
            item.shown = True
        item.thinking.append(text)
        self._chars += len(text)
        out.append(block_delta(self._index, {"type": "thinking_delta", "thinking": text}))

    # -- message text --------------------------------------------------------------------

    def _text_delta(self, event: dict[str, Any], out: list[Event]) -> None:
        refusal = event.get("type") == "response.refusal.delta"
        part = event.get("content_index", 0)
        self._show_text(
            self._item(event, "message"), part, text_of(event.get("delta")), refusal, out
        )

    def _text_done(self, event: dict[str, Any], out: list[Event]) -> None:
        """`output_text.done` / `refusal.done` / `content_part.done`: the part's whole text,
        used only when no delta brought it."""
        item = self._item(event, "message")
        part = event.get("content_index", 0)
        data = event.get("part")
        if isinstance(data, dict):
            self._fill(item, part, data, out)
        elif event.get("type") == "response.refusal.done":
            self._fill(item, part, {"type": "refusal", "refusal": event.get("refusal")}, out)
        else:
            self._fill(item, part, {"type": "output_text", "text": event.get("text")}, out)

    def _fill(self, item: _Item, part: Any, data: dict[str, Any], out: list[Event]) -> None:
        if part not in item.parts:
            text, refusal = part_text(data)
            self._show_text(item, part, text, refusal, out)

    def _show_text(
        self, item: _Item, part: Any, text: str, refusal: bool, out: list[Event]
    ) -> None:
        if not text:
            return
        part = part if isinstance(part, int) else 0
        item.parts.add(part)
        if refusal:
            self._refusal = True
        else:
            self._text = True
        if self._owner != (item.index, part):
            self._begin("text", {"type": "text", "text": ""}, (item.index, part), out)
        self._chars += len(text)
        out.append(block_delta(self._index, {"type": "text_delta", "text": text}))

    # -- function calls ------------------------------------------------------------------

    def _call_fields(self, item: _Item, data: dict[str, Any]) -> None:
        # The first non-empty id and name stand (PROTOCOL.md pitfalls: never concatenated).
        item.call_id = item.call_id or text_of(data.get("call_id"))
        item.name = item.name or text_of(data.get("name"))

    def _arguments_delta(self, event: dict[str, Any], out: list[Event]) -> None:
        item = self._item(event, "function_call")
        self._feed_arguments(item, text_of(event.get("delta")), out)

    def _arguments_done(self, event: dict[str, Any], out: list[Event]) -> None:
        item = self._item(event, "function_call")
        self._call_fields(item, event)
        self._final_arguments(item, event.get("arguments"), out)

    def _feed_arguments(self, item: _Item, text: str, out: list[Event]) -> None:
        if text and item.position != -2:  # -2: its block closed already
            item.raw.append(text)
            item.arguments.feed(text)
            self._chars += len(text)
        self._open_call(item, out)

    def _final_arguments(self, item: _Item, text: Any, out: list[Event]) -> None:
        """The whole argument text (`.done`, `output_item.done`): authoritative. Some servers
        send the arguments only here; where it extends what streamed, the rest is fed; where it
        differs from text already sent, what was sent stands (bytes cannot be taken back)."""
        if not isinstance(text, str) or not text:
            return
        streamed = "".join(item.raw)
        if text == streamed:
            return
        if text.startswith(streamed):
            self._feed_arguments(item, text[len(streamed) :], out)
        elif not item.sent:
            item.arguments, item.raw = Arguments(), []
            self._feed_arguments(item, text, out)

    def _open_call(self, item: _Item, out: list[Event], force: bool = False) -> None:
        """Open the call's block once its name is known (or at the end, `force`d, without
        one: as the JSON reply has it); send what arguments can go."""
        if item.position == -1 and (item.name or force):
            item.position = self._calls
            self._calls += 1
            block = {
                "type": "tool_use",
                "id": tool_id(item.call_id, self._ctx, item.position),
                "name": self._ctx.tool_names.to_client(item.name),
                "input": {},
            }
            self._begin("tool_use", block, (item.index, -1), out)
        if self._owner == (item.index, -1) and not item.arguments.complete:
            piece = item.arguments.take()
            if piece:
                item.sent = True
                out.append(
                    block_delta(self._index, {"type": "input_json_delta", "partial_json": piece})
                )

    # -- blocks --------------------------------------------------------------------------

    def _begin(self, kind: str, block: Block, owner: Owner, out: list[Event]) -> None:
        self._close(out)
        self._index += 1
        self._open, self._owner = kind, owner
        out.append({"type": "content_block_start", "index": self._index, "content_block": block})

    def _close(self, out: list[Event]) -> None:
        kind, owner = self._open, self._owner
        if kind is None or owner is None:
            return
        item = self._items[owner[0]]
        if kind == "thinking":
            signature = None
            if item.final is not None:  # only `.done` has the final encrypted content
                signature = carried_signature(item.final, self._scope, item.source)
            signature = signature or proxy_signature("".join(item.thinking))
            out.append(
                block_delta(self._index, {"type": "signature_delta", "signature": signature})
            )
        elif kind == "tool_use":
            rest = item.arguments.rest()
            item.position = -2
            out.append(block_delta(self._index, {"type": "input_json_delta", "partial_json": rest}))
        out.append({"type": "content_block_stop", "index": self._index})
        self._open = self._owner = None

    def _whole(self, block: Block, out: list[Event]) -> None:
        """A block known whole at once, as the events that give it."""
        self._close(out)
        self._index += 1
        index, kind = self._index, block["type"]
        if kind == "thinking":
            start: Block = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        elif kind == "text":
            start, deltas = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": block["text"]}],
            )
        elif kind == "tool_use":
            start = {**block, "input": {}}
            partial = json.dumps(block["input"], ensure_ascii=False)
            deltas = [{"type": "input_json_delta", "partial_json": partial}]
        else:
            start, deltas = block, []
        out.append({"type": "content_block_start", "index": index, "content_block": start})
        out.extend(block_delta(index, d) for d in deltas)
        out.append({"type": "content_block_stop", "index": index})

    # -- end -----------------------------------------------------------------------------

    def _end(self, response: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        self._close(out)
        if not self._items:
            # A server that sent no item events: the terminal response has the whole output.
            whole = output_blocks(response.get("output"), self._ctx, self._scope)
            for block in whole.blocks:
                self._whole(block, out)
            self._calls, self._text, self._refusal = whole.calls, whole.text, whole.refusal
        for item in self._items.values():
            if item.kind == "function_call" and item.position == -1:
                self._open_call(item, out, force=True)
                self._close(out)
        self._usage = chat_usage(response.get("usage"))
        reason, sequence = stop(
            response, tool_calls=self._calls > 0, refusal=self._refusal and not self._text
        )
        out.extend(self._stop(reason, sequence))
        return out


_HANDLERS = {
    "response.output_item.added": ResponsesStreamTranslator._added,
    "response.output_item.done": ResponsesStreamTranslator._item_done,
    "response.reasoning_summary_text.delta": ResponsesStreamTranslator._reasoning_delta,
    "response.reasoning_text.delta": ResponsesStreamTranslator._reasoning_delta,
    "response.reasoning_summary_text.done": ResponsesStreamTranslator._reasoning_done,
    "response.reasoning_text.done": ResponsesStreamTranslator._reasoning_done,
    "response.output_text.delta": ResponsesStreamTranslator._text_delta,
    "response.refusal.delta": ResponsesStreamTranslator._text_delta,
    "response.output_text.done": ResponsesStreamTranslator._text_done,
    "response.refusal.done": ResponsesStreamTranslator._text_done,
    "response.content_part.done": ResponsesStreamTranslator._text_done,
    "response.function_call_arguments.delta": ResponsesStreamTranslator._arguments_delta,
    "response.function_call_arguments.done": ResponsesStreamTranslator._arguments_done,
}
