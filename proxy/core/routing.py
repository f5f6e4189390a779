"""Client model name -> (upstream, upstream model).

Claude Code asks for `claude-opus-*`, `claude-sonnet-*`, `claude-fable-*` and `claude-haiku-*`
(PROTOCOL.md 11.5: the four aliases it knows); users map the haiku tier to a small model and the
others to a big one, on the default upstream. Ordered rules come first, and may send a name to
another named upstream. Before them all, a *gateway id* (`qwen3@claude-bridge`,
`local/qwen3@claude-bridge`) names its upstream and model outright: it is what `GET /v1/models`
lists and what `claude-bridge code` puts in Claude Code's model variables, so a model picked in
Claude Code's `/model` reaches exactly the model that row described, whatever the rules say.

A rule may also ask for what the request holds (`features.Features`): thinking on, more input
tokens than a threshold, images, Claude Code's request class (a subagent's, a compaction...).
It matches when its pattern and every condition it sets do; a name-only rule matches any
request for that name.

A rule, `big_model` and `small_model` may name a chain of targets: the first serves, the others
are tried in order when it fails (proxy/resilience). A target is `upstream:model`, or a model on
the default upstream (on a rule: on the rule's upstream); the prefix counts only when it names a
declared upstream, so Ollama's `qwen3:8b` stays a model name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .features import PLAIN, Features

DEFAULT_UPSTREAM = "default"
"""The upstream of the top-level settings (`openai_base_url`, `openai_api_key`, ...)."""

TIERS = ("opus", "sonnet", "fable", "haiku")
"""Claude's model families, as Claude Code's aliases name them; only haiku is small."""
SMALL_TIERS = frozenset({"haiku"})
LATEST = {
    "opus": "claude-opus-5-5",
    "sonnet": "claude-sonnet-5-5",
    "fable": "claude-fable-5-2",
    "haiku": "claude-haiku-5-5",
}
"""What each alias resolves to in Claude Code 2.1.33x (its `latest_per_family`): the names a
tier's requests carry, to find where the rules send them."""
GATEWAY_SUFFIX = "@claude-bridge"
"""Ends every id claude-bridge lists. It holds `claude`, so Claude Code's discovery keeps it
(PROTOCOL.md 11.4), yet the id neither starts with `claude-` nor names a Claude model, so Claude
Code takes the window it is told (`CLAUDE_CODE_MAX_CONTEXT_TOKENS`) instead of Claude's."""


@dataclass(frozen=True)
class Target:
    """One upstream model a request may be sent to."""

    upstream: str
    model: str

    def __str__(self) -> str:
        return f"{self.upstream}:{self.model}"


def parse_target(text: str, upstreams: Collection[str], upstream: str = DEFAULT_UPSTREAM) -> Target:
    """`local:qwen3` -> qwen3 on `local` when `local` is a declared upstream (or `default`);
    anything else is a model on `upstream`."""
    name, colon, model = text.partition(":")
    if colon and model and (name in upstreams or name == DEFAULT_UPSTREAM):
        return Target(name, model)
    return Target(upstream, text)


def parse_chain(
    spec: str | Sequence[str] | None, upstreams: Collection[str], upstream: str = DEFAULT_UPSTREAM
) -> tuple[Target, ...]:
    """The targets a setting names, in order: one string or a list of them."""
    texts = [spec] if isinstance(spec, str) else list(spec or ())
    return tuple(parse_target(text, upstreams, upstream) for text in texts if text)


@dataclass(frozen=True)
class Rule:
    pattern: str = "*"
    """A shell-style glob matched against the client's model name, case-insensitively."""
    model: str | None = None
    """None: the client's name, unchanged (an upstream that knows Claude's names)."""
    upstream: str = DEFAULT_UPSTREAM
    thinking: bool | None = None
    """Set: the request's thinking must be on (True) or off (False)."""
    min_input_tokens: int | None = None
    """Set: the request's estimated input tokens must be above it (long context)."""
    images: bool | None = None
    """Set: the request must (True) or must not (False) hold an image."""
    request_class: str | None = None
    """Set: Claude Code's request class must be it (`subagent`, `compaction`, `main`...)."""
    fallbacks: tuple[Target, ...] = ()
    """Tried in order after the rule's own target, when it fails."""

    def describe(self) -> str:
        """The pattern and what the rule asks beyond the name: `*haiku*, thinking`."""
        asked = [
            "" if self.pattern == "*" else self.pattern,
            "thinking" if self.thinking else "no thinking" if self.thinking is False else "",
            f"input > {self.min_input_tokens}" if self.min_input_tokens is not None else "",
            "images" if self.images else "no images" if self.images is False else "",
            self.request_class or "",
        ]
        return ", ".join(a for a in asked if a) or "*"

    def takes(self, features: Features) -> bool:
        return (
            (self.thinking is None or self.thinking == features.thinking)
            and (self.min_input_tokens is None or features.input_tokens > self.min_input_tokens)
            and (self.images is None or self.images == features.images)
            and (self.request_class is None or self.request_class == features.request_class)
        )


@dataclass(frozen=True)
class Route:
    upstream: str
    model: str
    why: str = field(default="", compare=False)
    """What chose it, for the dashboard and the logs: `rule 2 (claude-haiku-*)`, `haiku tier`,
    `big_model`, `gateway id`, `as asked`."""
    fallbacks: tuple[Target, ...] = ()
    """Where the request goes next, in order, if `upstream`/`model` fails it."""

    @property
    def targets(self) -> tuple[Target, ...]:
        """The whole chain, this route's own target first."""
        return (Target(self.upstream, self.model), *self.fallbacks)


def route(
    client_model: str,
    *,
    big_model: str | Sequence[str] | None,
    small_model: str | Sequence[str] | None,
    rules: Sequence[Rule] = (),
    upstreams: Collection[str] = (),
    features: Features = PLAIN,
) -> Route:
    """`big_model`, `small_model`: a target or a chain of them (`parse_chain`); `upstreams`:
    the named upstreams a gateway id or a target may name (the default one always);
    `features`: what the request holds, for the rules that ask (default: a plain request)."""
    addressed = gateway_route(client_model, upstreams)
    if addressed is not None:
        return addressed
    for number, rule in enumerate(rules, 1):
        if _matches(client_model, rule) and rule.takes(features):
            why = f"rule {number} ({rule.describe()})"
            return Route(rule.upstream, rule.model or client_model, why, rule.fallbacks)
    family = tier(client_model)
    small = parse_chain(small_model, upstreams)
    if family in SMALL_TIERS and small:
        return _chained(small, f"{family} tier: small_model")
    # Unknown names go to the big model too: a client picked a model, so it wants a capable one.
    big = parse_chain(big_model, upstreams)
    if big:
        return _chained(big, f"{family} tier: big_model" if family else "no rule: big_model")
    return Route(DEFAULT_UPSTREAM, client_model, "as asked")


def _chained(targets: tuple[Target, ...], why: str) -> Route:
    first, *rest = targets
    return Route(first.upstream, first.model, why, tuple(rest))


def matching_rule(client_model: str, rules: Sequence[Rule]) -> Rule | None:
    """The first rule that takes a plain request for `client_model`, if any."""
    return next((r for r in rules if _matches(client_model, r) and r.takes(PLAIN)), None)


def _matches(client_model: str, rule: Rule) -> bool:
    return fnmatch.fnmatchcase(client_model.lower(), rule.pattern.lower())


def tier(client_model: str) -> str | None:
    """The Claude family a model name belongs to (`claude-3-5-haiku-latest`: haiku)."""
    lowered = client_model.lower()
    return next((family for family in TIERS if family in lowered), None)


def gateway_id(upstream: str, model: str) -> str:
    """The id that routes to `model` on `upstream` whatever the rules (`gateway_route`)."""
    prefix = "" if upstream == DEFAULT_UPSTREAM else f"{upstream}/"
    return f"{prefix}{model}{GATEWAY_SUFFIX}"


def gateway_route(client_model: str, upstreams: Collection[str] = ()) -> Route | None:
    """Where a gateway id goes; None for any other name. `upstreams`: the named upstreams
    (`local/qwen3@claude-bridge` is qwen3 on `local` only if `local` is one of them; else it
    is the model `local/qwen3` on the default upstream, as OpenRouter names models)."""
    if not client_model.lower().endswith(GATEWAY_SUFFIX):
        return None
    name = client_model[: -len(GATEWAY_SUFFIX)]
    upstream, slash, model = name.partition("/")
    if slash and model and upstream in upstreams and upstream != DEFAULT_UPSTREAM:
        return Route(upstream, model, "gateway id")
    return Route(DEFAULT_UPSTREAM, name, "gateway id") if name else None
