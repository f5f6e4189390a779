"""OpenAI usage -> Anthropic usage (PROTOCOL.md 8.5)."""

from __future__ import annotations

import math
from typing import Any

from .context import ReplyContext

TIMINGS_KEY = "timings"


def with_timings(usage: dict[str, Any], timings: Any) -> dict[str, Any]:
    """llama.cpp reports cached prompt tokens only as `timings.cache_n`, next to `usage`."""
    if isinstance(timings, dict) and timings.get("cache_n"):
        return {**usage, TIMINGS_KEY: timings}
    return usage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _object(value: Any) -> dict[str, Any]:
    """An optional details object; anything else an upstream puts there (a string, a list, a
    number, null) says nothing, and is read as empty."""
    return value if isinstance(value, dict) else {}


def anthropic_usage(
    usage: dict[str, Any] | None, ctx: ReplyContext, estimate_output: int = 0
) -> dict[str, int]:
    """Anthropic's three input fields are disjoint and sum to the prompt; OpenAI's
    `prompt_tokens` already includes cached and written tokens, so they are split out.

    Without upstream usage the estimates stand in (`ctx.input_estimate`, counted only then):
    clients need integers, never nulls.
    """
    if not usage:
        return {
            "input_tokens": ctx.input_estimate,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": estimate_output,
        }
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = _object(usage.get("prompt_tokens_details"))
    completion_details = _object(usage.get("completion_tokens_details"))
    cached = _int(prompt_details.get("cached_tokens")) or _int(
        usage.get("prompt_cache_hit_tokens")  # DeepSeek
    )
    if not cached:
        # llama.cpp: prompt_tokens = prompt_n + cache_n; trusted only when it fits the prompt.
        cache_n = _int(_object(usage.get(TIMINGS_KEY)).get("cache_n"))
        cached = cache_n if cache_n <= prompt else 0
    written = _int(prompt_details.get("cache_write_tokens"))
    reasoning = _int(completion_details.get("reasoning_tokens"))
    total = _int(usage.get("total_tokens"))
    if reasoning and total == prompt + completion + reasoning and total != prompt + completion:
        # xAI counts reasoning outside completion_tokens; Anthropic bills it as output.
        completion += reasoning
    return {
        "input_tokens": max(prompt - cached - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": completion,
    }


def reasoning_tokens(usage: Any) -> int:
    """The reasoning part of the output (`completion_tokens_details.reasoning_tokens`)."""
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    return _int(details.get("reasoning_tokens")) if isinstance(details, dict) else 0


def reported_cost(usage: Any) -> float | None:
    """The cost an upstream put in its usage (OpenRouter: `cost`, in USD). With the user's own
    provider key (`is_byok`), `cost` is only OpenRouter's fee: the provider's charge is added."""
    if not isinstance(usage, dict):
        return None
    cost = _usd(usage.get("cost"))
    if cost is None:
        return None
    details = usage.get("cost_details")
    if usage.get("is_byok") is True and isinstance(details, dict):
        cost += _usd(details.get("upstream_inference_cost")) or 0.0
    return cost


def _usd(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
