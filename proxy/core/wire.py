"""A request body as the bytes that go upstream."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .errors import InvalidRequest

_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON. Refuses NaN and Infinity (JSON, and so the upstream, has neither).

    orjson writes it when it can: what Python's encoder writes, 30 times faster (a 480 KB
    Claude Code body: 0.2 ms instead of 6). It would write NaN and Infinity as null without a
    word, so a body whose output has a null, and one it refuses (a lone surrogate, an integer
    past 64 bits), is written by Python's encoder, as before."""
    try:
        fast = orjson.dumps(body)
    except TypeError:
        pass
    else:
        if b"null" not in fast:
            return fast
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # Python's parser takes NaN, Infinity and 1e999; JSON (and the upstream) does not.
        raise InvalidRequest(
            "request body has a number JSON cannot carry (NaN or Infinity)"
        ) from None
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (`\ud83d` cut from its pair, e.g. by a truncated tool output) has
        # no UTF-8 form; the conversation must stay usable, so it becomes U+FFFD.
        return _SURROGATE.sub("\ufffd", text).encode()
