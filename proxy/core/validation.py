"""Client request bodies -> validated models, or an `invalid_request_error` saying what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ..models.anthropic import AT, PAYLOADS_ELIDED, TAG_PREFIX
from .errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

# Deeper JSON than this is not a conversation; refusing it keeps recursion out of the parser.
MAX_DEPTH = 128


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_body(raw: bytes, model: type[M]) -> M:
    return validate(parse_object(raw), model)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the `invalid_request_error` saying why it is not one."""
    try:
        # Python's json reads NaN and Infinity, which JSON (and every upstream) refuses.
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    problem = _scan(data)
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


def _scan(data: dict[str, Any]) -> Literal["deep", "surrogate"] | None:
    """What makes `data` unfit to go on, found in one pass over it.

    A lone UTF-16 surrogate (`"\\ud800"` is valid JSON; so are the bytes ED A0 80 to
    `json.loads`, which decodes UTF-8 with `surrogatepass`) cannot be encoded as UTF-8: left in,
    it fails wherever the request is written out again - after the upstream call, for `model`.
    One generic pass covers every string and key, wherever clients put them; scalars are
    checked in place rather than stacked, which makes it cheaper than the depth check alone was.
    """
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            for key in node:
                if not key.isascii() and _lone_surrogate(key):
                    return "surrogate"
            values: Iterable[Any] = node.values()
        else:
            values = node
        depth += 1
        if depth > MAX_DEPTH and node:
            return "deep"
        for value in values:
            # `isascii` is O(1) on CPython: only non-ASCII strings pay for the encode.
            if isinstance(value, str):
                if not value.isascii() and _lone_surrogate(value):
                    return "surrogate"
            elif isinstance(value, (dict, list)):
                stack.append((value, depth))
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
