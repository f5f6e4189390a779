"""Client model name -> (upstream, upstream model).

Claude Code asks for `claude-opus-*`, `claude-sonnet-*` and `claude-haiku-*`; users map the
first two to a big model and the third to a small one, on the default upstream. Ordered rules
come first, and may send a name to another named upstream.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_UPSTREAM = "default"
"""The upstream of the top-level settings (`openai_base_url`, `openai_api_key`, ...)."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    """A shell-style glob matched against the client's model name, case-insensitively."""
    model: str | None = None
    """None: the client's name, unchanged (an upstream that knows Claude's names)."""
    upstream: str = DEFAULT_UPSTREAM


@dataclass(frozen=True)
class Route:
    upstream: str
    model: str


def route(
    client_model: str,
    *,
    big_model: str | None,
    small_model: str | None,
    rules: Sequence[Rule] = (),
) -> Route:
    lowered = client_model.lower()
    for rule in rules:
        if fnmatch.fnmatchcase(lowered, rule.pattern.lower()):
            return Route(rule.upstream, rule.model or client_model)
    if "haiku" in lowered and small_model:
        return Route(DEFAULT_UPSTREAM, small_model)
    # Unknown names go to the big model too: a client picked a model, so it wants a capable one.
    return Route(DEFAULT_UPSTREAM, big_model or client_model)
