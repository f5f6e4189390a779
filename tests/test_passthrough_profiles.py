"""Pass-through (`mode = "anthropic"`) to servers that refuse some of what Claude Code sends:
each provider profile leaves out what its server is known to reject, `drop_fields` and
`drop_betas` leave out anything named, and everything else reaches the upstream exactly as the
client sent it (same values, same key order).

Over real HTTP: plain httpx as the client, so that the body and the `anthropic-beta` header are
Claude Code's to the byte, and the scripted upstream recording what it received.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BIG_MODEL, Bridge, bridge_settings, make_http, start_bridge
from pydantic import ValidationError
from test_passthrough import message
from upstream import FakeUpstream, JSONReply, RecordedRequest, SSEReply

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core import passthrough_profiles
from claude_bridge.proxy.core.passthrough import forward_body, forward_headers
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.replay import diff_record

DATA = Path(__file__).parent / "data" / "requests"
# Claude Code 2.1.332's main-loop betas (PROTOCOL.md 11.2) and one a gateway refused.
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01,"
    "thinking-token-count-2026-05-13,advanced-tool-use-2025-11-20,effort-2025-11-24,"
    "fast-mode-2026-02-01"
)
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
TOOL_SEARCH = {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"}
SERVER_TOOLS = (WEB_SEARCH["name"], TOOL_SEARCH["name"])
Body = dict[str, Any]


def claude_code_body(thinking: str = "adaptive") -> Body:
    """What Claude Code sends (tests/data's captured shape, PROTOCOL.md 11.3): billing header,
    a mid-conversation system message, `context_management`, a deferred MCP tool; plus what
    other versions and modes add: `speed`, `diagnostics`, fine-grained tool streaming, the web
    search and tool search server tools, a `tool_reference` from ToolSearch (with the deferred
    tool, what tool search sends). `thinking="disabled"` is a subagent
    request (2.1.166+), effort still set."""
    body: Body = json.loads((DATA / "claude_code.anthropic.json").read_text())
    body["thinking"] = {"type": thinking}
    body["output_config"] = {"effort": "medium"}
    body["speed"] = "fast"
    body["diagnostics"] = {"request_trace": True}
    body["tools"][1]["eager_input_streaming"] = True
    body["tools"].extend((WEB_SEARCH, TOOL_SEARCH))
    body["messages"][-1]["content"][0]["content"] = [
        {"type": "tool_reference", "tool_name": "WebSearch"}
    ]
    return body


def without(body: Body, *paths: str) -> Body:
    """A deep copy of `body` without the fields at `paths` (`tools[].name` in every tool)."""
    result = copy.deepcopy(body)
    for path in paths:
        head, _, field = path.partition("[].")
        if field:
            for item in result[head]:
                item.pop(field, None)
        else:
            *parents, last = path.split(".")
            node = result
            for key in parents:
                node = node[key]
            node.pop(last)
    return result


def minus_server_tools(body: Body) -> Body:
    return {**body, "tools": [t for t in body["tools"] if t["name"] not in SERVER_TOOLS]}


def system_as_user(body: Body) -> Body:
    messages = [{**m, "role": "user"} if m["role"] == "system" else m for m in body["messages"]]
    return {**body, "messages": messages}


def minus_billing_header(body: Body) -> Body:
    return {**body, "system": body["system"][1:]}


def same(expected: Body, received: RecordedRequest) -> None:
    """Equal, key order included: what the proxy did not drop is the client's as sent."""
    assert json.dumps(received.json) == json.dumps({**expected, "model": BIG_MODEL})


def beta_list(text: str) -> list[str]:
    return text.split(",")


ALL_BETAS = beta_list(BETAS)


def betas_without(*prefixes: str) -> list[str]:
    return [b for b in ALL_BETAS if not b.startswith(prefixes)]


Case = tuple[str, Callable[[Body], Body], list[str]]
# Each profile, what it must do to a subagent request, and the betas that must be left.
CASES: list[Case] = [
    ("generic", lambda b: b, ALL_BETAS),
    ("anthropic", lambda b: b, ALL_BETAS),
    ("llamacpp", lambda b: b, ALL_BETAS),
    ("ollama", lambda b: b, ALL_BETAS),
    ("deepseek", lambda b: without(b, "output_config.effort"), ALL_BETAS),
    ("kimi", lambda b: without(b, "thinking"), ALL_BETAS),
    (
        "zai",
        lambda b: without(b, "tools[].defer_loading"),
        betas_without("advanced-tool-use-"),
    ),
    ("minimax", lambda b: system_as_user(minus_server_tools(b)), ALL_BETAS),
    ("openrouter", minus_billing_header, ALL_BETAS),
    ("vllm", minus_server_tools, ALL_BETAS),
    (
        "strict",
        lambda b: minus_server_tools(
            without(
                b,
                "context_management",
                "speed",
                "diagnostics",
                "tools[].defer_loading",
                "tools[].eager_input_streaming",
            )
        ),
        betas_without("context-management-", "advanced-tool-use-", "fast-mode-"),
    ),
]


def post(bridge: Bridge, body: Body, betas: str = BETAS) -> None:
    with make_http(bridge) as http:
        response = http.post("/v1/messages?beta=true", json=body, headers={"anthropic-beta": betas})
    assert response.status_code == 200, response.text


@pytest.fixture
def reply(upstream: FakeUpstream) -> FakeUpstream:
    upstream.always(JSONReply(message([{"type": "text", "text": "ok"}])))
    return upstream


@pytest.mark.parametrize(("provider", "expect", "betas"), CASES, ids=[c[0] for c in CASES])
def test_each_profile_leaves_out_what_its_server_rejects(
    make_bridge: Callable[..., Bridge],
    reply: FakeUpstream,
    provider: str,
    expect: Callable[[Body], Body],
    betas: list[str],
) -> None:
    bridge = make_bridge(mode="anthropic", provider=provider)
    subagent = claude_code_body(thinking="disabled")
    post(bridge, subagent)
    same(expect(subagent), reply.last)
    assert beta_list(reply.last.headers["anthropic-beta"]) == betas
    if expect(subagent) != subagent:  # every entry that drops something says where it was seen
        assert passthrough_profiles.by_name(provider).seen


def test_conditional_drops_only_when_thinking_is_off(
    make_bridge: Callable[..., Bridge], reply: FakeUpstream
) -> None:
    """DeepSeek takes an effort with thinking on; Kimi takes `thinking` unless it says off."""
    main_loop = claude_code_body()
    for provider in ("deepseek", "kimi"):
        post(make_bridge(mode="anthropic", provider=provider), main_loop)
        same(main_loop, reply.last)


def test_streamed_requests_are_adapted_alike(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    events = [
        {"type": "message_start", "message": {**message([]), "stop_reason": None}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
        {"type": "message_stop"},
    ]
    upstream.reply(SSEReply([f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]))
    body = {**claude_code_body(thinking="disabled"), "stream": True}
    post(make_bridge(mode="anthropic", provider="deepseek"), body)
    same(without(body, "output_config.effort"), upstream.last)


def test_drop_settings_for_any_upstream(
    make_bridge: Callable[..., Bridge], reply: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    """Top-level `drop_fields`/`drop_betas` apply to every pass-through upstream without its
    own; an upstream's own lists replace them; dotted paths and `[]` reach inside."""
    second_upstream.always(JSONReply(message([{"type": "text", "text": "ok"}])))
    bridge = make_bridge(
        mode="anthropic",
        drop_fields=["context_management", "output_config.effort", "tools[].cache_control"],
        drop_betas=["context-management-2025-06-27", "per-turn-*"],
        upstreams={
            "local": {
                "base_url": second_upstream.base_url,
                "mode": "anthropic",
                "drop_fields": ["speed"],
                "drop_betas": [],
            }
        },
        routes=[{"pattern": "*local*", "upstream": "local"}],
    )
    body = claude_code_body()
    post(bridge, body)
    same(
        without(body, "context_management", "output_config.effort", "tools[].cache_control"),
        reply.last,
    )
    assert beta_list(reply.last.headers["anthropic-beta"]) == betas_without(
        "context-management-", "per-turn-"
    )

    post(bridge, {**body, "model": "claude-local"})
    assert json.dumps(second_upstream.last.json) == json.dumps(
        {**without(body, "speed"), "model": "claude-local"}
    )
    assert second_upstream.last.headers["anthropic-beta"] == BETAS


def test_a_header_left_with_no_beta_is_not_sent(
    make_bridge: Callable[..., Bridge], reply: FakeUpstream
) -> None:
    post(make_bridge(mode="anthropic", drop_betas=["*"]), claude_code_body())
    assert "anthropic-beta" not in reply.last.headers


def test_profiles_are_detected_from_the_base_url() -> None:
    expected = {
        "https://api.deepseek.com/anthropic": "deepseek",
        "https://api.moonshot.ai/anthropic": "kimi",
        "https://api.kimi.com/coding/": "kimi",
        "https://api.z.ai/api/anthropic": "zai",
        "https://open.bigmodel.cn/api/anthropic": "zai",
        "https://api.minimax.io/anthropic": "minimax",
        "https://api.minimaxi.com/anthropic": "minimax",
        "https://openrouter.ai/api": "openrouter",
        "http://gpu-box:8000": "vllm",
        "http://127.0.0.1:8080": "llamacpp",
        "http://localhost:11434": "ollama",
        "https://api.anthropic.com": "anthropic",
        "https://gateway.example/anthropic": "generic",
    }
    found = {url: passthrough_profiles.resolve(None, url).name for url in expected}
    assert found == expected
    assert passthrough_profiles.resolve("strict", "https://api.deepseek.com").name == "strict"


def test_the_clients_body_and_headers_are_never_modified() -> None:
    body = claude_code_body(thinking="disabled")
    before = copy.deepcopy(body)
    profile = passthrough_profiles.by_name("strict").with_settings(["messages[].content"])
    adapted, dropped = forward_body(body, BIG_MODEL, profile)
    assert body == before and adapted != before
    assert dropped == [
        "context_management",
        "speed",
        "diagnostics",
        "tools[].defer_loading",
        "tools[].eager_input_streaming",
        "messages[].content",
        "tool tool_search_tool_regex",
        "tool web_search",
    ]
    headers = {"anthropic-beta": BETAS, "anthropic-version": "2023-06-01"}
    forward_headers(headers, profile)
    assert headers == {"anthropic-beta": BETAS, "anthropic-version": "2023-06-01"}


def test_a_tool_choice_naming_a_dropped_tool_goes_too() -> None:
    """Claude Code's WebSearch side call forces the server tool (some versions)."""
    body: Body = {"tools": [WEB_SEARCH], "tool_choice": {"type": "tool", "name": "web_search"}}
    adapted, _ = forward_body(body, BIG_MODEL, passthrough_profiles.by_name("vllm"))
    assert adapted == {"model": BIG_MODEL}


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"mode": "openai", "provider": "kimi"}, "unknown provider 'kimi'"),
        ({"mode": "anthropic", "provider": "gemini"}, "unknown pass-through provider 'gemini'"),
        ({"drop_fields": ["tools[]..x"]}, "is not a field path"),
        (
            {"upstreams": {"u": {"base_url": "http://h", "drop_fields": ["a b"]}}},
            "is not a field path",
        ),
    ],
)
def test_settings_name_what_is_wrong(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("[", r"\[")):
        Settings(**settings)


def test_drop_settings_from_the_environment() -> None:
    settings = Settings.model_validate({"drop_fields": "speed, diagnostics", "drop_betas": "a,b"})
    assert settings.drop_fields == ["speed", "diagnostics"]
    assert settings.drop_betas == ["a", "b"]


def test_recorded_with_its_profile_and_replayed_the_same(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The profile and drops are recorded with the exchange: `replay diff` rebuilds the same
    upstream body from the client's, and says what was left out."""
    settings = bridge_settings(
        upstream.base_url,
        mode="anthropic",
        provider="deepseek",
        drop_fields=["speed"],
        record_dir=str(tmp_path / "journal"),
    )
    recorder = Recorder.from_settings(settings)
    bridge = start_bridge(settings, create_app(settings, recorder=recorder))
    upstream.reply(JSONReply(message([{"type": "text", "text": "ok"}])))
    try:
        post(bridge, claude_code_body(thinking="disabled"))
    finally:
        bridge.stop()
    (record,) = load(recorder.path).records
    options = record.routing.options or {}
    assert options["passthrough"]["name"] == "deepseek"
    assert [d["path"] for d in options["passthrough"]["drops"]] == [
        "output_config.effort",
        "speed",
    ]
    assert record.notes == ["output_config.effort", "speed"]
    result = diff_record(record)
    assert result.request.outcome == "same", result.request.unified(record.id)
