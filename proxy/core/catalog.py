"""The models claude-bridge offers, in the Anthropic Models API's shape (PROTOCOL.md 11.4).

Each offer is one upstream model that a configured tier or rule reaches (or that the upstream
lists itself), under its gateway id (`routing.gateway_id`). Its display name and description say
where it goes, since Claude Code's `/model` shows them and nothing else would tell the user that
"Opus" is a local Qwen. Pagination follows Anthropic's: `limit` 1-1000 (default 20), `after_id`
or `before_id` cursors, `has_more`, `first_id`, `last_id`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest
from .routing import LATEST, TIERS, Route, Rule, gateway_id, route

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
EPOCH = "1970-01-01T00:00:00Z"
"""`created_at` is required; the API's documented value when the release date is unknown."""
_GLOB = frozenset("*?[")


@dataclass(frozen=True)
class Limits:
    """What a model holds: its context window and the most output tokens it writes."""

    context_window: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Offer:
    upstream: str
    model: str
    uses: tuple[str, ...] = ()
    """What reaches it: `opus, sonnet, fable`, `rule claude-haiku-*`, `listed by the upstream`."""


def configured_offers(
    *,
    big_model: str | None,
    small_model: str | None,
    rules: Sequence[Rule],
    upstreams: Collection[str],
) -> list[Offer]:
    """The upstream models the tiers and the rules reach, tiers first (the big model first),
    one offer per (upstream, model). Names passed through as asked offer nothing new."""
    uses: dict[tuple[str, str], list[str]] = {}
    for family in TIERS:
        name = LATEST[family]
        to = route(
            name, big_model=big_model, small_model=small_model, rules=rules, upstreams=upstreams
        )
        if to.model != name:
            uses.setdefault((to.upstream, to.model), []).append(family)
    for rule in rules:
        if rule.model is not None:
            target = Route(rule.upstream, rule.model)
        elif not _GLOB & set(rule.pattern):
            target = Route(rule.upstream, rule.pattern)  # one name, kept as the client's
        else:
            continue
        uses.setdefault((target.upstream, target.model), []).append(f"rule {rule.describe()}")
    return [Offer(upstream, model, tuple(used)) for (upstream, model), used in uses.items()]


def listed_offers(listed: Mapping[str, Sequence[str]], offered: Sequence[Offer]) -> list[Offer]:
    """The models upstreams list themselves (by upstream name), less those already offered."""
    seen = {(o.upstream, o.model) for o in offered}
    return [
        Offer(upstream, model, ("listed by the upstream",))
        for upstream, models in listed.items()
        for model in models
        if (upstream, model) not in seen
    ]


def model_info(offer: Offer, where: str, limits: Limits = Limits()) -> dict[str, Any]:
    """One `ModelInfo` (what `GET /v1/models/{id}` answers). `where`: the upstream as the user
    knows it (`local (127.0.0.1:8080)`)."""
    reached = f" ({', '.join(offer.uses)})" if offer.uses else ""
    return {
        "type": "model",
        "id": gateway_id(offer.upstream, offer.model),
        "display_name": f"{offer.model} on {where}",
        # Not Anthropic's: Claude Code shows it under the name in `/model` (PROTOCOL.md 11.4).
        "description": f"claude-bridge → {where}{reached}",
        "created_at": EPOCH,
        "max_input_tokens": limits.context_window,
        "max_tokens": limits.max_output_tokens,
        "capabilities": None,
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
    }


def limit_param(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def page(
    models: Sequence[dict[str, Any]],
    *,
    limit: int = DEFAULT_LIMIT,
    after_id: str | None = None,
    before_id: str | None = None,
) -> dict[str, Any]:
    """One page of the list, as `GET /v1/models` answers it. A cursor must be a listed id."""
    if after_id and before_id:
        raise InvalidRequest("after_id and before_id: give one cursor, not both")
    ids = [m["id"] for m in models]
    if after_id or before_id:
        cursor = after_id or before_id
        if cursor not in ids:
            raise InvalidRequest(f"{'after_id' if after_id else 'before_id'}: no model {cursor!r}")
        at = ids.index(cursor)
        start, end = (at + 1, at + 1 + limit) if after_id else (max(0, at - limit), at)
    else:
        start, end = 0, limit
    data = list(models[start:end])
    has_more = start > 0 if before_id else end < len(models)
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def find(models: Sequence[dict[str, Any]], model_id: str) -> dict[str, Any] | None:
    return next((m for m in models if m["id"] == model_id), None)
