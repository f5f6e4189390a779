"""Client request bodies -> validated models, or an `invalid_request_error` saying what is wrong."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..models.anthropic import TAG_PREFIX
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
    if _too_deep(data):
        raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels")
    return data


def validate(data: dict[str, Any], model: type[M]) -> M:
    """`data` as `model` (left unchanged, so a pass-through can still send it on)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first error as the API words it: `messages.0.content.1.source: Field required`."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = [str(part) for part in first["loc"] if not str(part).startswith(TAG_PREFIX)]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        found = (first.get("ctx") or {}).get("tag", "")
        kind = str(found).removeprefix(TAG_PREFIX)
        message = f"unknown type {kind!r}" if kind else "missing `type`"
        path.append("type")
    else:
        message = first["msg"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{'.'.join(path) or 'body'}: {message}{more}"


def _too_deep(data: Any) -> bool:
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
