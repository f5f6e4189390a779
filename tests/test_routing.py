"""Client model names onto upstream models: rules first, then haiku -> small, else big."""

from __future__ import annotations

import pytest

from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM, Route, Rule, route


@pytest.mark.parametrize(
    ("client_model", "expected"),
    [
        ("claude-opus-4-5-20251101", "big-model"),
        ("claude-sonnet-4-5", "big-model"),
        ("claude-3-7-sonnet-latest", "big-model"),
        ("claude-haiku-4-5-20251001", "small-model"),
        ("claude-3-5-haiku-latest", "small-model"),
        ("CLAUDE-HAIKU-4-5", "small-model"),
        ("gpt-4o", "big-model"),  # unknown names want a capable model too
        ("", "big-model"),
    ],
)
def test_big_and_small(client_model: str, expected: str) -> None:
    assert route(client_model, big_model="big-model", small_model="small-model").model == expected


def test_haiku_without_a_small_model_goes_big() -> None:
    assert route("claude-haiku-4-5", big_model="big-model", small_model=None).model == "big-model"


def test_nothing_configured_passes_the_name_through() -> None:
    assert route("claude-sonnet-4-5", big_model=None, small_model=None).model == "claude-sonnet-4-5"
    assert route("claude-haiku-4-5", big_model=None, small_model=None).model == "claude-haiku-4-5"
    assert route("claude-haiku-4-5", big_model=None, small_model="small").model == "small"


def test_rules_come_first_in_order() -> None:
    rules = [
        Rule("claude-opus-*", "opus-upstream"),
        Rule("*sonnet*", "sonnet-upstream"),
        Rule("claude-*", "catch-all"),
        Rule("*haiku*", "never-reached"),
    ]

    def routed(name: str) -> str:
        return route(name, big_model="big", small_model="small", rules=rules).model

    assert routed("claude-opus-4-5") == "opus-upstream"
    assert routed("claude-3-7-sonnet-latest") == "sonnet-upstream"
    assert routed("claude-haiku-4-5") == "catch-all"
    assert routed("gpt-4o") == "big"


def test_rules_are_case_insensitive_whole_name_globs() -> None:
    rules = [Rule("Claude-Opus-*", "opus"), Rule("sonnet", "exact-only")]
    assert route("claude-opus-4-5", big_model="big", small_model=None, rules=rules).model == "opus"
    # A glob matches the whole name, not a part of it.
    assert route("claude-sonnet-4-5", big_model="big", small_model=None, rules=rules).model == "big"
    assert route("SONNET", big_model="big", small_model=None, rules=rules).model == "exact-only"


def test_glob_character_classes() -> None:
    rules = [Rule("claude-*-4-[56]*", "new"), Rule("claude-?-*", "old")]
    assert route("claude-opus-4-5", big_model="b", small_model="s", rules=rules).model == "new"
    assert route("claude-sonnet-4-6", big_model="b", small_model="s", rules=rules).model == "new"
    assert route("claude-3-haiku", big_model="b", small_model="s", rules=rules).model == "old"
    assert route("claude-opus-4-1", big_model="b", small_model="s", rules=rules).model == "b"


def test_rules_name_an_upstream_and_may_keep_the_client_name() -> None:
    rules = [
        Rule("*haiku*", "qwen3:4b", upstream="local"),
        Rule("claude-opus-*", upstream="anthropic-compatible"),
    ]

    def routed(name: str) -> Route:
        return route(name, big_model="big", small_model="small", rules=rules)

    assert routed("claude-haiku-4-5") == Route("local", "qwen3:4b")
    assert routed("claude-opus-4-5") == Route("anthropic-compatible", "claude-opus-4-5")
    # Names no rule takes stay on the default upstream, with the big/small mapping.
    assert routed("claude-sonnet-4-5") == Route(DEFAULT_UPSTREAM, "big")
