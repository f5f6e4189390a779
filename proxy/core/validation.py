"""Client request bodies -> validated models, or an `invalid_request_error` saying what is wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from ..models.anthropic import AT, PAYLOADS_ELIDED, TAG_PREFIX
from .errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

# Deeper JSON than this is not a conversation; refusing it keeps recursion out of the parser.
MAX_DEPTH = 128


NOT_FINITE = "request body has a number JSON cannot carry (NaN or Infinity)"


class NotFinite(ValueError):
    """A number too big for a double (1e999), which Python reads as infinity."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    # Refused here rather than when the body is written out again: orjson, which writes it,
    # would write infinity as null.
    number = float(text)
    if not math.isfinite(number):
        raise NotFinite(text)
    return number


def parse_body(raw: bytes, model: type[M]) -> M:
    return validate(parse_object(raw), model)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the `invalid_request_error` saying why it is not one.

    orjson reads it when it can (a 480 KB Claude Code body: a third less time, and no
    surrogate checks after it). It refuses what the checks here are for (lone surrogates, NaN,
    Infinity, a number past a double like 1e999, nesting past 1,024 levels): those bodies take
    Python's parser and get its words. It reads integers past 64 bits as floats: a body where
    the scan finds a float that big is read again by Python's parser, which keeps them exact."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        problem = _scan(data, read_by_orjson=True)
        if problem != "big number":
            return _refused(data, problem)
    try:
        # Python's json reads NaN and Infinity, which JSON (and every upstream) refuses.
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except NotFinite:
        raise InvalidRequest(NOT_FINITE) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return _refused(data, _scan(data, read_by_orjson=False))


def _refused(data: dict[str, Any], problem: Problem | None) -> dict[str, Any]:
    """`data`, unless the scan found a `problem` with it."""
    if problem == "deep":
        raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels")
    if problem == "surrogate":
        raise InvalidRequest(_where_surrogate(data))
    return data


def validate(data: dict[str, Any], model: type[M], *, payloads_elided: bool = False) -> M:
    """`data` as `model` (left unchanged, so a pass-through can still send it on);
    `payloads_elided`: a recorded body whose base64 payloads a journal replaced."""
    try:
        return model.model_validate(data, context={PAYLOADS_ELIDED: payloads_elided})
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first error as the API words it: `messages.0.content.1.source: Field required`."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = [str(part) for part in first["loc"] if not str(part).startswith(TAG_PREFIX)]
    path.extend(str(part) for part in (first.get("ctx") or {}).get(AT, ()))
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        found = (first.get("ctx") or {}).get("tag", "")
        kind = str(found).removeprefix(TAG_PREFIX)
        message = f"unknown type {kind!r}" if kind else "missing `type`"
        path.append("type")
    else:
        message = first["msg"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{'.'.join(path) or 'body'}: {message}{more}"


Problem = Literal["deep", "surrogate", "big number"]
# orjson reads integers in [-2**63, 2**64) exactly; past that, a float at least this big.
_BIG = float(2**63)


def _scan(data: dict[str, Any], read_by_orjson: bool) -> Problem | None:
    """What makes `data` unfit to go on, found in one pass over it.

    A lone UTF-16 surrogate (`"\\ud800"` is valid JSON; so are the bytes ED A0 80 to
    `json.loads`, which decodes UTF-8 with `surrogatepass`) cannot be encoded as UTF-8: left in,
    it fails wherever the request is written out again - after the upstream call, for `model`.
    One generic pass covers every string and key, wherever clients put them; scalars are
    checked in place rather than stacked, which makes it cheaper than the depth check alone was.
    orjson refuses surrogates: what it read is looked at for floats that may have been big
    integers instead.
    """
    level: list[Any] = [data]
    depth = 0
    # Level by level, so that the depth is the loop's: a stack of (node, depth) pairs cost a
    # third of the time. Types are tested with `is`: both parsers make plain dicts and lists.
    while level:
        depth += 1
        if depth > MAX_DEPTH and any(level):
            return "deep"
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                if not read_by_orjson:
                    for key in node:
                        if not key.isascii() and _lone_surrogate(key):
                            return "surrogate"
                values: Iterable[Any] = node.values()
            else:
                values = node
            for value in values:
                kind = type(value)
                if kind is str:
                    # `isascii` is O(1) on CPython: only non-ASCII strings pay for the encode.
                    if not read_by_orjson and not value.isascii() and _lone_surrogate(value):
                        return "surrogate"
                elif kind is dict or kind is list:
                    below.append(value)
                elif kind is float and read_by_orjson and not -_BIG < value < _BIG:
                    return "big number"
        level = below
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _where_surrogate(data: dict[str, Any]) -> str:
    """The message naming the first string (in document order) with a lone surrogate; only
    called once `_scan` found one, so its cost (paths for every value) is never paid on
    good requests."""
    found = _find_surrogate(data, ())
    assert found is not None, "_scan found a surrogate that _find_surrogate cannot"
    where, text, is_key = found
    bad = next(char for char in text if 0xD800 <= ord(char) <= 0xDFFF)
    what = "an object key" if is_key else "the string"
    return (
        f"{'.'.join(where) or 'body'}: {what} holds a lone UTF-16 surrogate "
        f"(\\u{ord(bad):04x}), which is not valid Unicode"
    )


def _find_surrogate(data: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], str, bool] | None:
    if isinstance(data, str):
        return (path, data, False) if _lone_surrogate(data) else None
    if isinstance(data, dict):
        for key, value in data.items():
            if _lone_surrogate(key):
                return path, key, True
            found = _find_surrogate(value, (*path, key))
            if found is not None:
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found = _find_surrogate(value, (*path, str(index)))
            if found is not None:
                return found
    return None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
