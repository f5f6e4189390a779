"""What each upstream model holds: its context window and its longest answer.

Where a figure comes from, strongest first:

1. a route's own `context_window` / `max_output_tokens`, for the model that route names;
2. the config's `[models."MODEL"]` (globs as in `routes`), matched on the upstream model name;
3. for the window only, the `genai-prices` dataset (it has no output limits), looked up as
   prices are (`pricing.dataset_model`); never for a self-hosted server, whose window is
   whatever it was started with.

Used to lower `max_tokens` without a hand-set `max_tokens_cap`, to say `M maximum` in the
`prompt is too long` error Claude Code compacts on, in `GET /v1/models`, and by `code` to tell
Claude Code the window (PROTOCOL.md 11.5).
"""

from __future__ import annotations

import fnmatch
import logging

from .config import ModelLimits, Settings
from .core import providers
from .core.catalog import Limits
from .core.routing import DEFAULT_UPSTREAM
from .pricing import dataset_model, is_self_hosted

log = logging.getLogger("claude_bridge.windows")

MAX_CACHED = 4096
"""Look-ups kept; client-chosen model names must not grow it without end."""


def configured(settings: Settings, upstream: str, model: str) -> Limits:
    """What the config says about `model` on `upstream`, without the dataset: a route naming
    it, then `[models]` (exact name, then globs). Cheap enough for every request."""
    upstream = upstream or DEFAULT_UPSTREAM
    routed = next(
        (r for r in settings.routes if r.model == model and r.upstream == upstream and _set(r)),
        None,
    )
    lowered = model.lower()
    table = next((m for n, m in settings.models.items() if n.lower() == lowered), None) or next(
        (m for n, m in settings.models.items() if fnmatch.fnmatchcase(lowered, n.lower())), None
    )
    found = [limits for limits in (routed, table) if limits is not None]
    return Limits(
        next((f.context_window for f in found if f.context_window), None),
        next((f.max_output_tokens for f in found if f.max_output_tokens), None),
    )


class Windows:
    """`configured`, then the dataset's window; looked up once per (upstream, model)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._endpoints = settings.endpoints()
        self._found: dict[tuple[str, str], Limits] = {}

    def of(self, upstream: str, model: str) -> Limits:
        key = (upstream or DEFAULT_UPSTREAM, model)
        found = self._found.get(key)
        if found is None:
            found = configured(self._settings, *key)
            if found.context_window is None:
                found = Limits(self._dataset_window(*key), found.max_output_tokens)
            if len(self._found) >= MAX_CACHED:
                self._found.clear()
            self._found[key] = found
        return found

    def _dataset_window(self, upstream: str, model: str) -> int | None:
        endpoint = self._endpoints.get(upstream)
        if endpoint is None or not model:
            return None
        profile = providers.resolve(endpoint.provider, endpoint.base_url, model).name
        if is_self_hosted(endpoint.base_url, profile):
            return None
        try:
            info = dataset_model(profile, endpoint.base_url, model)
            if (info is None or info.context_window is None) and "/" in model:
                # OpenRouter's entries often lack it; the maker's own entry has it.
                info = dataset_model("", "", model.rsplit("/", 1)[1])
        except Exception:  # a dataset of a newer shape than this code knows: no window
            log.exception("genai-prices could not size %s on %s", model, upstream)
            return None
        return None if info is None else info.context_window


def _set(limits: ModelLimits) -> bool:
    return limits.context_window is not None or limits.max_output_tokens is not None
