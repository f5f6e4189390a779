"""The upstream dialects by name, and which one an upstream speaks (see `base.Dialect`).

A further dialect is one module defining a `Dialect` subclass, added to `DIALECTS` here.
"""

from __future__ import annotations

from typing import get_args

from ..providers import resolve
from ..responses import upstreams
from .anthropic import ANTHROPIC
from .base import Built, Dialect
from .chat import CHAT
from .responses import RESPONSES

DIALECTS: dict[str, Dialect] = {d.name: d for d in (CHAT, RESPONSES, ANTHROPIC)}
AUTO = "auto"
"""An upstream's `mode` when unset: Responses for the models OpenAI serves only there
(`responses.upstreams.default_dialect`), Chat Completions for everything else."""
MODES = (AUTO, *DIALECTS)

__all__ = ["AUTO", "DIALECTS", "MODES", "Built", "Dialect", "by_name", "candidates", "choose"]


def by_name(name: str) -> Dialect:
    """The dialect a setting or a recording names; a recording's unknown name is an error."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r} (known: {', '.join(MODES)})") from None


def choose(mode: str, provider: str | None, base_url: str, model: str) -> Dialect:
    """The dialect for a request to `model` on an upstream with `mode`, `provider` (or none:
    detected from `base_url`)."""
    if mode != AUTO:
        return by_name(mode)
    return DIALECTS[upstreams.default_dialect(resolve(provider, base_url, model).name, model)]


def candidates(mode: str) -> list[Dialect]:
    """Every dialect an upstream with `mode` may speak, whatever the model."""
    if mode == AUTO:
        return [DIALECTS[name] for name in get_args(upstreams.Dialect)]
    return [by_name(mode)]
