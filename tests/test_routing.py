"""Client model names onto upstream models: rules first, then haiku -> small, else big."""

from __future__ import annotations

import pytest
from anthropic.types import MessageParam
from conftest import BIG_MODEL, bridge_settings, make_client, start_bridge
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.cli.render import exchange_line
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import RouteRule, Settings
from claude_bridge.proxy.core.features import PLAIN, Features, request_features
from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM, Route, Rule, route
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.models.anthropic import MessagesRequest
from claude_bridge.proxy.plan import plan, read


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


# -- rules on what the request holds --------------------------------------------------------

FEATURE_RULES = [
    Rule("*", "reasoner", thinking=True),
    Rule("*", "long", min_input_tokens=60000),
    Rule("*", "vision", images=True),
    Rule("*haiku*", "helper", request_class="subagent"),
]


@pytest.mark.parametrize(
    ("client_model", "features", "expected", "why"),
    [
        ("claude-opus-4-6", Features(thinking=True), "reasoner", "rule 1 (thinking)"),
        ("claude-opus-4-6", Features(input_tokens=60001), "long", "rule 2 (input > 60000)"),
        ("claude-opus-4-6", Features(input_tokens=60000), "big", "opus tier: big_model"),
        ("claude-sonnet-4-6", Features(images=True), "vision", "rule 3 (images)"),
        (
            "claude-haiku-4-5",
            Features(request_class="subagent"),
            "helper",
            "rule 4 (*haiku*, subagent)",
        ),
        ("claude-opus-4-6", Features(request_class="subagent"), "big", "opus tier: big_model"),
        ("claude-fable-5-2", PLAIN, "big", "fable tier: big_model"),
        ("claude-haiku-4-5", PLAIN, "small", "haiku tier: small_model"),
        ("gpt-4o", PLAIN, "big", "no rule: big_model"),
        ("small@claude-bridge", Features(thinking=True), "small", "gateway id"),
    ],
)
def test_feature_rules_in_order(
    client_model: str, features: Features, expected: str, why: str
) -> None:
    to = route(
        client_model, big_model="big", small_model="small", rules=FEATURE_RULES, features=features
    )
    assert (to.model, to.why) == (expected, why)


def test_features_of_a_request() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K" * 1500},
    }
    call = {"type": "tool_use", "id": "t1", "name": "Read", "input": {}}
    in_result = {"type": "tool_result", "tool_use_id": "t1", "content": [image]}
    request = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 10,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "look"},
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [in_result, {"type": "text", "text": "x"}]},
            ],
        }
    )
    found = request_features(request, 12_400, {"X-Claude-Code-Agent-Id": "a1"})
    # The base64 payload is no prompt text: 12400 bytes less 12000 of it, four bytes a token.
    assert found == Features(thinking=True, input_tokens=100, images=True, request_class="subagent")
    plain = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    )
    hinted = {"x-claude-code-request-class": "Compaction", "x-claude-code-agent-id": "a1"}
    assert request_features(plain, 400, hinted).request_class == "compaction"
    assert request_features(plain, 400, {}) == Features(input_tokens=100)


def test_feature_rules_over_the_wire_and_on_the_request_line(upstream: FakeUpstream) -> None:
    settings = bridge_settings(
        upstream.base_url,
        routes=[
            {"pattern": "*", "thinking": True, "model": "reasoner"},
            {"pattern": "*", "request_class": "subagent", "model": "helper"},
        ],
    )
    finished: list[Exchange] = []
    bus = Bus()
    bus.subscribe(lambda kind, exchange: finished.append(exchange) if kind == "finish" else None)
    bridge = start_bridge(settings, create_app(settings, bus=bus))
    upstream.always(JSONReply(completion("ok")))
    hi: list[MessageParam] = [{"role": "user", "content": "Hi"}]
    try:
        with make_client(bridge) as sdk:
            sdk.messages.create(
                model="claude-opus-4-6",
                max_tokens=8,
                messages=hi,
                thinking={"type": "adaptive"},
            )
            sdk.messages.create(
                model="claude-opus-4-6",
                max_tokens=8,
                messages=hi,
                extra_headers={"x-claude-code-agent-id": "agent-1"},
            )
            sdk.messages.create(model="claude-opus-4-6", max_tokens=8, messages=hi)
    finally:
        bridge.stop()
    assert [r.json["model"] for r in upstream.requests] == ["reasoner", "helper", BIG_MODEL]
    lines = [exchange_line(e).plain for e in finished]
    assert "→ reasoner [rule 1]" in lines[0]
    assert "↳ opus-4-6 → helper [rule 2]" in lines[1]
    assert "[rule" not in lines[2] and "↳" not in lines[2]


def test_the_features_are_made_only_for_rules_to_look_at() -> None:
    """Finding them walks every block of the conversation: a body routed without rules is
    spared it."""
    body = b'{"model": "claude-opus-4-6", "max_tokens": 8, "thinking": {"type": "adaptive"},'
    body += b' "messages": [{"role": "user", "content": "Hi"}]}'
    plain = Settings(openai_base_url="http://127.0.0.1:9/v1", big_model="big")
    asked = read(body, {})
    assert plan(asked, plain, plain.endpoints(), {}).upstream_model == "big"
    assert "features" not in vars(asked)
    ruled = Settings(
        openai_base_url="http://127.0.0.1:9/v1",
        big_model="big",
        routes=[RouteRule(pattern="*", thinking=True, model="r")],
    )
    assert plan(asked, ruled, ruled.endpoints(), {}).upstream_model == "r"
    assert asked.features.thinking
