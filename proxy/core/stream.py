"""OpenAI chat completion chunks -> Anthropic stream events (PROTOCOL.md 3, 8.3).

`StreamTranslator` is a pure state machine: `start()` once the upstream answered 2xx, `feed` or
`feed_data` per upstream chunk, `finish()` at end of input, `fail(error)` when the upstream
broke. Each returns the Anthropic events to send, in order; after `message_stop` or `error`
(`done`) everything returns nothing. Content and stop reason follow `response.py`, so a
streamed and a non-streamed answer to the same upstream reply say the same thing.

Tool arguments are streamed live while their text is a valid prefix of a JSON object, and
buffered from the first character that is not; at block close the rest is sent so that the
whole is one JSON object (SDKs abort the stream on anything else, and bytes cannot be taken back).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .context import ReplyContext
from .errors import BridgeError, UpstreamError, from_stream_error
from .ids import Carried, proxy_signature, tool_id_to_client
from .jsonfix import RAW_ARGUMENTS_KEY, parse_arguments, repair
from .reasoning import encrypted_reasoning, reasoning_signature, reasoning_text
from .source import EventSource, Translator
from .sse import SSEDecoder
from .stop import stop_reason
from .usage import with_timings

Event = dict[str, Any]

# What the argument validator expects next.
_START = 0  # the opening brace (leading whitespace is dropped)
_KEY_OR_CLOSE = 1  # after "{"
_KEY = 2  # after "," in an object
_KEY_STRING = 3
_COLON = 4
_VALUE = 5  # after ":" or after "," in an array
_VALUE_OR_CLOSE = 6  # after "["
_STRING = 7
_AFTER_VALUE = 8
_TOKEN = 9  # inside a number or true/false/null
_DONE = 10  # the top-level object closed: only whitespace may follow
_BROKEN = 11

_STRING_STOP = re.compile(r'["\\\x00-\x1f]')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_TOKEN_CHARS = frozenset("0123456789+-.eEtrufalsn")
_TOKEN_START = frozenset("-0123456789tfn")
_LITERALS = frozenset(("true", "false", "null"))
_WHITESPACE = frozenset(" \t\n\r")
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_HEX = frozenset("0123456789abcdefABCDEF")
# Models write raw newlines and tabs inside strings; strict parsers (jiter in the Python SDK,
# JSON.parse in the TS one) reject them, so they are sent escaped.
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
# Where a delta may carry reasoning (`reasoning.reasoning_text`): most deltas have none of them.
_REASONING_FIELDS = frozenset(("reasoning_details", "reasoning_content", "reasoning"))


class Arguments:
    """One tool call's argument text, checked character by character as fragments arrive.

    `take()` gives the part that can be sent now: the longest prefix after which no repair
    could change what was sent. Held back: whitespace and commas outside strings (repair drops
    trailing ones), unfinished numbers, literals and escapes, and the final closing brace
    (some servers send `{}` and then the real object).
    """

    __slots__ = (
        "_emitted",
        "_escape",
        "_mode",
        "_pieces",
        "_safe",
        "_size",
        "_stack",
        "_tail",
        "_token",
        "_unsent",
    )

    def __init__(self) -> None:
        self._mode = _START
        self._stack: list[bool] = []  # True for an object, False for an array
        self._escape = 0  # 0: none; -1: after a backslash; 1-4: hex digits still due
        self._token = ""
        self._pieces: list[str] = []  # the normalized text, while valid
        self._unsent: list[str] = []  # its part not taken yet
        self._tail: list[str] = []  # raw text from the first invalid character on
        self._size = 0
        self._safe = 0
        self._emitted = 0

    @property
    def complete(self) -> bool:
        return self._mode == _DONE

    def take(self) -> str:
        count = self._safe - self._emitted
        if count <= 0:
            return ""
        unsent = "".join(self._unsent)
        self._unsent = [unsent[count:]] if len(unsent) > count else []
        self._emitted = self._safe
        return unsent[:count]

    def rest(self) -> str:
        """What completes the sent prefix to the final JSON object: the text itself when it
        is one, else the first repair that keeps the sent prefix."""
        text = "".join(self._pieces) + "".join(self._tail)
        sent = text[: self._emitted]
        if self._mode == _DONE:
            return text[len(sent) :]
        repaired = repair(text)
        if repaired.startswith(sent) and _is_object(repaired):
            return repaired[len(sent) :]
        dumped = json.dumps(parse_arguments(text), ensure_ascii=False)
        if dumped.startswith(sent):
            return dumped[len(sent) :]
        prefix = Arguments()
        prefix.feed(sent)
        return prefix.closing(text if self._mode == _BROKEN else None)

    def closing(self, raw: str | None) -> str:
        """Completes a valid prefix. With `raw`, the text that broke after it, that text goes
        along as `_raw_arguments`, as `parse_arguments` does: a value cut short by bad JSON
        must not pass for the model's intent (a truncated command or file), and strict tool
        schemas refuse the extra key."""
        end = {_KEY_STRING: '":null', _STRING: '"', _COLON: ":null", _VALUE: "null"}
        closers = ["}" if is_object else "]" for is_object in reversed(self._stack)]
        if raw is None:
            return end.get(self._mode, "") + "".join(closers)
        raw_member = f",{json.dumps(RAW_ARGUMENTS_KEY)}:{json.dumps(raw, ensure_ascii=False)}}}"
        return end.get(self._mode, "") + "".join(closers[:-1]) + raw_member

    def feed(self, text: str) -> None:
        if self._mode == _BROKEN:
            self._tail.append(text)
            return
        out: list[str] = []
        size = self._size
        safe = self._safe
        mode = self._mode
        stack = self._stack
        i, n = 0, len(text)
        while i < n:
            if mode in (_STRING, _KEY_STRING):
                if self._escape:
                    char = text[i]
                    if self._escape < 0:
                        if char == "u":
                            self._escape = 4
                        elif char in _SIMPLE_ESCAPES:
                            self._escape = 0
                        else:
                            break
                    elif char in _HEX:
                        self._escape -= 1
                    else:
                        break
                    out.append(char)
                    size += 1
                    i += 1
                    if not self._escape:
                        safe = size
                    continue
                match = _STRING_STOP.search(text, i)
                end = match.start() if match else n
                if end > i:
                    out.append(text[i:end])
                    size += end - i
                    safe = size
                    i = end
                if match is None:
                    break
                char = text[i]
                i += 1
                if char == '"':
                    mode = _COLON if mode == _KEY_STRING else _AFTER_VALUE
                    out.append(char)
                    size += 1
                    safe = size
                elif char == "\\":
                    self._escape = -1
                    out.append(char)
                    size += 1
                else:
                    escaped = _CONTROL_ESCAPES.get(char) or f"\\u{ord(char):04x}"
                    out.append(escaped)
                    size += len(escaped)
                    safe = size
                continue
            char = text[i]
            if mode == _TOKEN:
                if char in _TOKEN_CHARS:
                    self._token += char
                    out.append(char)
                    size += 1
                    i += 1
                    continue
                if not (self._token in _LITERALS or _NUMBER.fullmatch(self._token)):
                    break
                mode = _AFTER_VALUE
                safe = size
            if char in _WHITESPACE:
                if mode != _START:
                    out.append(char)
                    size += 1
                i += 1
                continue
            if mode in (_VALUE, _VALUE_OR_CLOSE) or (mode == _START and char == "{"):
                if char == "{":
                    stack.append(True)
                    mode = _KEY_OR_CLOSE
                elif char == "[":
                    stack.append(False)
                    mode = _VALUE_OR_CLOSE
                elif char == '"':
                    mode = _STRING
                elif char in _TOKEN_START:
                    self._token = char
                    mode = _TOKEN
                elif char == "]" and mode == _VALUE_OR_CLOSE:
                    mode = self._close(stack)
                else:
                    break
            elif mode in (_KEY_OR_CLOSE, _KEY):
                if char == '"':
                    mode = _KEY_STRING
                elif char == "}" and mode == _KEY_OR_CLOSE:
                    mode = self._close(stack)
                else:
                    break
            elif mode == _COLON and char == ":":
                mode = _VALUE
            elif mode == _AFTER_VALUE:
                if char == ",":
                    mode = _KEY if stack[-1] else _VALUE
                elif char == ("}" if stack[-1] else "]"):
                    mode = self._close(stack)
                else:
                    break
            else:
                break
            out.append(char)
            size += 1
            i += 1
            if mode != _TOKEN and mode != _DONE and char != ",":
                safe = size
        if i < n:
            mode = _BROKEN
            self._tail.append(text[i:])
        self._mode = mode
        self._size = size
        self._safe = safe
        self._pieces.extend(out)
        self._unsent.extend(out)

    @staticmethod
    def _close(stack: list[bool]) -> int:
        stack.pop()
        return _AFTER_VALUE if stack else _DONE


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class _ToolCall:
    __slots__ = ("arguments", "closed", "extra", "id", "name", "position")

    def __init__(self, position: int) -> None:
        self.position = position
        self.id = ""
        self.name = ""
        self.arguments = Arguments()
        self.closed = False
        self.extra: dict[str, Any] | None = None  # Gemini's extra_content (thought signature)


class StreamTranslator(Translator):
    unit = "a chunk"

    def __init__(self, ctx: ReplyContext) -> None:
        super().__init__(ctx)
        self._index = -1  # of the newest block
        self._open: str | None = None  # type of the open block
        self._thinking: list[str] = []  # text of the open thinking block
        self._signature: str | None = None
        self._reasoning_source: str | None = None
        self._calls: list[_ToolCall] = []
        self._keys: dict[int | str, _ToolCall] = {}
        self._signatures: dict[str, dict[str, Any]] = {}  # OpenRouter-Gemini, by tool call id
        self._next_call = 0  # calls before this one have had their block
        self._active: _ToolCall | None = None  # the call whose block is open
        self._finish: str | None = None
        self._native_finish: Any = None
        self._matched_stop: Any = None
        self._saw_text = False
        self._saw_refusal = False

    def feed_data(self, data: str) -> list[Event]:
        """One upstream SSE `data` field: a chunk, `[DONE]`, or a keep-alive to ignore."""
        if not self._done and data.strip() == "[DONE]":
            return self._end()
        return super().feed_data(data)

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self._done:
            return []
        if chunk.get("error") or chunk.get("object") == "error":
            return self.fail(from_stream_error(chunk))
        out = [] if self._started else self.start()
        usage = chunk.get("usage")
        if usage and isinstance(usage, dict):
            # The last one wins: servers repeat it, never split it.
            self._usage = with_timings(usage, chunk.get("timings"))
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return out  # usage-only chunk, or Azure's prompt_filter_results
        choice = choices[0]
        if not isinstance(choice, dict):
            return out
        delta = choice.get("delta")
        if delta and isinstance(delta, dict):
            self._delta(delta, out)
        reason = choice.get("finish_reason")
        if reason:
            if reason == "error":
                failure = UpstreamError("upstream ended the reply with finish_reason 'error'")
                return out + self.fail(failure)
            self._finish = reason
            self._native_finish = choice.get("native_finish_reason") or self._native_finish
            self._matched_stop = choice.get("stop_reason")
        return out

    def finish(self) -> list[Event]:
        """The upstream body ended. Without `[DONE]` or a finish_reason it was cut off, and
        a cut answer must not look complete."""
        if self._done:
            return []
        if self._finish is None:
            return self.fail(UpstreamError("upstream stream ended before the reply was complete"))
        return self._end()

    # -- content -------------------------------------------------------------------------

    def _delta(self, delta: dict[str, Any], out: list[Event]) -> None:
        # A set test instead of three lookups: this runs on every chunk.
        if self._reasoning_source is not None or not _REASONING_FIELDS.isdisjoint(delta):
            self._reasoning(delta, out)
        content = delta.get("content")
        if content and isinstance(content, str):
            self._saw_text = True
            self._text(content, out)
        refusal = delta.get("refusal")
        if refusal and isinstance(refusal, str):
            self._saw_refusal = True
            self._text(refusal, out)
        tool_calls = delta.get("tool_calls")
        if tool_calls and isinstance(tool_calls, list):
            self._tool_calls(tool_calls, out)

    def _reasoning(self, delta: dict[str, Any], out: list[Event]) -> None:
        thinking, source = reasoning_text(delta, self._reasoning_source)
        self._reasoning_source = source
        details = delta.get("reasoning_details")  # OpenRouter's structured reasoning
        if details:
            signature = reasoning_signature(delta)
            if signature:
                self._signature = signature
        if thinking:
            if self._open != "thinking":
                self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            self._thinking.append(thinking)
            self._chars += len(thinking)
            out.append(_delta(self._index, {"type": "thinking_delta", "thinking": thinking}))
        if details:
            redacted, signatures = encrypted_reasoning(details)
            for data in redacted:
                self._begin("redacted_thinking", {"type": "redacted_thinking", "data": data}, out)
            if signatures:
                # They come before their calls; a call's block takes its signature into its id.
                self._signatures.update(signatures)

    def _text(self, text: str, out: list[Event]) -> None:
        if self._open != "text":
            self._begin("text", {"type": "text", "text": ""}, out)
        self._chars += len(text)
        out.append(_delta(self._index, {"type": "text_delta", "text": text}))

    def _begin(self, kind: str, block: dict[str, Any], out: list[Event]) -> None:
        self._close(out)
        self._index += 1
        self._open = kind
        out.append({"type": "content_block_start", "index": self._index, "content_block": block})

    def _close(self, out: list[Event]) -> None:
        kind = self._open
        if kind is None:
            return
        if kind == "thinking":
            signature = self._signature or proxy_signature("".join(self._thinking))
            self._signature = None
            self._thinking = []
            out.append(_delta(self._index, {"type": "signature_delta", "signature": signature}))
        elif kind == "tool_use":
            assert self._active is not None
            rest = self._active.arguments.rest()
            self._active.closed = True
            self._active = None
            out.append(_delta(self._index, {"type": "input_json_delta", "partial_json": rest}))
        out.append({"type": "content_block_stop", "index": self._index})
        self._open = None

    # -- tool calls ----------------------------------------------------------------------

    def _tool_calls(self, fragments: list[Any], out: list[Event]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            function = fragment.get("function")
            if not isinstance(function, dict):
                function = {}
            call = self._call_for(fragment, function)
            if call.closed:
                continue  # a late piece of a call whose block is closed: cannot be sent
            # Some servers repeat id and name in every fragment: the first ones stand.
            call.id = call.id or _text(fragment.get("id"))
            call.name = call.name or _text(function.get("name"))
            extra = fragment.get("extra_content")
            if extra and call.extra is None and isinstance(extra, dict):
                call.extra = extra
            arguments = function.get("arguments")
            if arguments and isinstance(arguments, str):
                self._chars += len(arguments)
                call.arguments.feed(arguments)
                if call is self._active and not call.arguments.complete:
                    self._send_arguments(call, out)
        self._schedule(out)

    def _call_for(self, fragment: dict[str, Any], function: dict[str, Any]) -> _ToolCall:
        """Fragments belong together by index; without one (Gemini) by id; without either, a
        fragment naming a function starts a call and any other continues the last one."""
        index = fragment.get("index")
        call_id = _text(fragment.get("id"))
        key: int | str | None
        if isinstance(index, int):
            key = index
        elif call_id:
            key = call_id
        elif function.get("name") or not self._calls:
            key = None
        else:
            return self._calls[-1]
        call = self._keys.get(key) if key is not None else None
        # An index reused for a call with another id is a new call, not a continuation.
        if call is None or (call_id and call.id and call_id != call.id):
            call = _ToolCall(len(self._calls))
            self._calls.append(call)
            if key is not None:
                self._keys[key] = call
        return call

    def _schedule(self, out: list[Event]) -> None:
        """Give the next call its block once the open one is complete. Calls arriving while
        another is still incomplete (interleaved by index) wait, buffered."""
        while self._next_call < len(self._calls):
            active = self._active
            if active is not None and not active.arguments.complete:
                return
            call = self._calls[self._next_call]
            if not call.name:
                return
            self._next_call += 1
            self._begin_call(call, out)
            if not call.arguments.complete:
                self._send_arguments(call, out)

    def _begin_call(self, call: _ToolCall, out: list[Event]) -> None:
        ctx = self._ctx
        carried = None
        if call.extra is not None or self._signatures:
            # Thought signatures the upstream wants back ride in the id (see `ids`).
            carried = Carried(call.extra, self._signatures.get(call.id))
        block = {
            "type": "tool_use",
            "id": tool_id_to_client(call.id, f"{ctx.message_id}:{call.position}", carried),
            "name": ctx.tool_names.to_client(call.name),
            "input": {},
        }
        self._begin("tool_use", block, out)
        self._active = call

    def _send_arguments(self, call: _ToolCall, out: list[Event]) -> None:
        piece = call.arguments.take()
        if piece:
            out.append(_delta(self._index, {"type": "input_json_delta", "partial_json": piece}))

    # -- end -----------------------------------------------------------------------------

    def _end(self) -> list[Event]:
        out = self.start()
        self._close(out)
        # Calls still buffered go out whole, one block each, in the order they began.
        for call in self._calls[self._next_call :]:
            self._begin_call(call, out)
            self._close(out)
        self._next_call = len(self._calls)
        reason, sequence = stop_reason(
            self._finish,
            tool_calls=bool(self._calls),
            refusal=self._saw_refusal and not self._saw_text,
            matched_stop=self._matched_stop,
            stop_sequences=list(self._ctx.stop_sequences),
            native_finish_reason=self._native_finish,
        )
        out.extend(self._stop(reason, sequence))
        return out


def _delta(index: int, delta: dict[str, Any]) -> Event:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def run_sse(
    source: EventSource, body: bytes | Iterable[bytes], failure: BridgeError | None = None
) -> list[Event]:
    """A whole upstream SSE body (or its chunks) -> the client's events, as `serve` sends them;
    with `failure`, as it sends them when the body broke off after those chunks."""
    decoder = SSEDecoder()
    out = source.start()
    for chunk in (body,) if isinstance(body, (bytes, bytearray)) else body:
        for event in decoder.decode(chunk):
            out += source.feed_data(event.data)
    if failure is not None:
        return out + source.fail(failure)
    for event in decoder.flush():
        out += source.feed_data(event.data)
    out += source.finish()
    return out


def translate_sse(body: bytes | Iterable[bytes], ctx: ReplyContext) -> list[Event]:
    return run_sse(StreamTranslator(ctx), body)
