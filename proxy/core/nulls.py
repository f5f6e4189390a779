"""Taking out of an answer the nulls the strict schema made the model write (PROTOCOL.md 13.3).

The request side (`strict.strict_schema`) sends optional properties as required and nullable;
`AddedNulls` remembers, per request, which client schemas that happened to (a tool's input
schema, by the client's tool name; the structured-output schema), and removes those nulls from
the message, or from the stream through `NullFilter`: a block that may hold such nulls (a
tool_use of such a tool, the text of a structured output) is held back until it closes and
then sent whole, cleaned. Nothing else is touched, and nothing at all when no null was added.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BridgeError
from .strict import remove_added_nulls, remove_added_nulls_text

if TYPE_CHECKING:  # source.py imports the reply context, which imports this module
    from .source import EventSource

Event = dict[str, Any]


@dataclass(frozen=True, eq=False)
class AddedNulls:
    tools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The original input schema of each tool (by the client's name) sent in strict form."""
    output: Mapping[str, Any] | None = None
    """The original structured-output schema, when it was sent in strict form."""

    def __bool__(self) -> bool:
        return bool(self.tools) or self.output is not None

    def tool_input(self, name: str, value: dict[str, Any]) -> dict[str, Any]:
        schema = self.tools.get(name)
        if schema is None:
            return value
        cleaned = remove_added_nulls(value, schema)
        return cleaned if isinstance(cleaned, dict) else value

    def text(self, text: str) -> str:
        return text if self.output is None else remove_added_nulls_text(text, self.output)

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        """An Anthropic message with its text and tool inputs cleaned."""
        if not self:
            return message
        return {**message, "content": [self._block(b) for b in message.get("content") or ()]}

    def _block(self, block: dict[str, Any]) -> dict[str, Any]:
        if block.get("type") == "text" and self.output is not None:
            return {**block, "text": self.text(block["text"])}
        if block.get("type") == "tool_use" and block.get("name") in self.tools:
            return {**block, "input": self.tool_input(block["name"], block["input"])}
        return block


class NullFilter:
    """Stream events in, the same events out, with the blocks that may hold added nulls sent
    whole once they close (their deltas cannot be taken back once sent)."""

    def __init__(self, nulls: AddedNulls) -> None:
        self._nulls = nulls
        self._held: list[str] | None = None
        self._kind = ""
        self._name = ""

    def __call__(self, events: list[Event]) -> list[Event]:
        if not self._nulls:
            return events
        out: list[Event] = []
        for event in events:
            kind = event.get("type")
            if kind == "content_block_start":
                self._start(event.get("content_block") or {})
            elif kind == "content_block_delta" and self._held is not None:
                delta = event.get("delta") or {}
                self._held.append(delta.get("partial_json") or delta.get("text") or "")
                continue
            elif kind == "content_block_stop" and self._held is not None:
                out.extend(self._release(event.get("index")))
            out.append(event)
        return out

    def _start(self, block: Mapping[str, Any]) -> None:
        self._held = None
        self._kind = str(block.get("type"))
        self._name = str(block.get("name"))
        if (self._kind == "tool_use" and self._name in self._nulls.tools) or (
            self._kind == "text" and self._nulls.output is not None
        ):
            self._held = []

    def _release(self, index: Any) -> list[Event]:
        text = "".join(self._held or ())
        self._held = None
        if self._kind == "tool_use":
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if isinstance(value, dict):
                text = json.dumps(self._nulls.tool_input(self._name, value), ensure_ascii=False)
            delta: dict[str, Any] = {"type": "input_json_delta", "partial_json": text}
        elif text:
            delta = {"type": "text_delta", "text": self._nulls.text(text)}
        else:
            return []
        return [{"type": "content_block_delta", "index": index, "delta": delta}]


class NullRemovingSource:
    """An `EventSource` (stream.py) whose events go through a `NullFilter`."""

    def __init__(self, source: EventSource, nulls: AddedNulls) -> None:
        self._source = source
        self._filter = NullFilter(nulls)

    @property
    def done(self) -> bool:
        return self._source.done

    @property
    def upstream_usage(self) -> dict[str, Any] | None:
        return self._source.upstream_usage

    def start(self) -> list[Event]:
        return self._filter(self._source.start())

    def feed_data(self, data: str) -> list[Event]:
        return self._filter(self._source.feed_data(data))

    def finish(self) -> list[Event]:
        return self._filter(self._source.finish())

    def fail(self, error: BridgeError) -> list[Event]:
        return self._filter(self._source.fail(error))
