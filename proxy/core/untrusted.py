"""Upstream JSON, read as untrusted input: a value every later step can handle, or a
`ValueError` saying why there is none.

Python's parser takes things that later steps cannot, so `loads` settles them here, once:

* lone UTF-16 surrogates (`"\\ud800"`, valid JSON) have no UTF-8 form, so the reply could not
  be sent on: they become U+FFFD, as they do in requests (`upstream._dumps`); escaped pairs
  were joined into one character by the parser already;
* NaN, Infinity and numbers too big for a float (`1e999`) are not JSON: they become null;
* nesting deeper than `MAX_DEPTH` raises `TooDeep`: no chat completion or Anthropic event
  comes near it, and whatever walked such a value next (an encoder, pydantic) would reach the
  interpreter's recursion limit. Python's own parser raises `RecursionError` near 1,000 levels.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MAX_DEPTH = 128

# Only text with one of these escapes can hold a surrogate once parsed (the UTF-8 decoding of
# the bytes replaced any encoded one): the common case skips the walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# orjson reads integers past 64 bits as floats, where Python's parser keeps them exact: text
# with 19 digits in a row takes Python's path (a string of digits costs it only the speed).
# Digits mapped to "0" and a search for a run: a fifth of what a regular expression costs.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_SLOW = object()


class TooDeep(ValueError):
    """The JSON nests deeper than `MAX_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels")


def loads(data: str | bytes) -> Any:
    """`data` parsed; `ValueError` (or its `TooDeep`) when it is not JSON this proxy can use.
    Bytes are read as UTF-8, bad sequences replaced, as the SSE decoder reads them.

    orjson first (a few times faster; it is on every streamed chunk): it refuses everything
    the rules above settle (lone surrogates, bad UTF-8, a byte-order mark, NaN, Infinity,
    1e999, nesting past 1,024), so what it takes needs only the depth check, and what it
    refuses takes Python's path, which settles it as before. Big integers are the one thing it
    reads differently, so text that may hold one goes to Python's path first."""
    value = _fast(data)
    return _slow(data) if value is _SLOW else value


def _slow(data: str | bytes) -> Any:
    """`loads` by Python's parser."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise TooDeep() from None
    if text.count("{") + text.count("[") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        value = _checked(value)
    return value


def _fast(data: str | bytes) -> Any:
    """`data` as orjson reads it, checked for depth; `_SLOW` when Python's path must decide."""
    if isinstance(data, str):
        try:
            data = data.encode()
        except UnicodeEncodeError:  # a lone surrogate
            return _SLOW
    if not orjson_reads_exactly(data):
        return _SLOW
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _SLOW
    # Nesting deeper than `MAX_DEPTH` needs more brackets than that: short text cannot.
    if len(data) > 2 * MAX_DEPTH and data.count(b"{") + data.count(b"[") > MAX_DEPTH:
        value = _checked(value)
    return value


def orjson_reads_exactly(data: bytes) -> bool:
    """Whether orjson, if it reads `data` at all, reads what Python's parser would: it takes
    integers past 64 bits for floats, so not when `data` has 19 digits in a row."""
    return _LONG_RUN not in data.translate(_DIGITS_TO_ZERO)


def event(data: str) -> dict[str, Any] | None:
    """One SSE `data` field as an object; None for anything else (garbage between events is
    skipped, as the SSE rules and OpenAI's SDK do). `TooDeep` is raised: it ends a stream."""
    value = _fast(data)  # `loads`, unrolled: this is on every streamed chunk
    if value is _SLOW:
        try:
            value = _slow(data)
        except TooDeep:
            raise
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _not_a_number(name: str) -> None:
    return None


def _finite(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _clean(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _checked(value: Any) -> Any:
    """`value` with its strings (keys too) cleaned in place; `TooDeep` past `MAX_DEPTH`.
    Iterative: the point is that nothing here recurses."""
    if isinstance(value, str):
        return _clean(value)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TooDeep()
        if isinstance(node, list):
            for position, item in enumerate(node):
                if isinstance(item, str):
                    node[position] = _clean(item)
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
        elif isinstance(node, dict):
            for key, item in list(node.items()):
                if isinstance(item, str):
                    item = node[key] = _clean(item)
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
                fixed = _clean(key)
                if fixed != key:
                    del node[key]
                    node[fixed] = item
    return value
