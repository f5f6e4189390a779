"""Provider profiles: detection, the edge helpers, and each profile's rules end to end.

The golden pairs in tests/data/{requests,responses,stream} show each profile's output; these
tests check what goldens cannot: detection, round trips from a reply into the next request
(thought signatures, reasoning pass-back, fitted tool ids), and that the rules are stateless.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from shapes import content_blocks, follow_up

from claude_bridge.proxy.core import providers
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.ids import (
    CARRIER_ID_PREFIX,
    Carried,
    decode_tool_id,
    fit_tool_id,
    tool_id_to_client,
    tool_id_to_upstream,
)
from claude_bridge.proxy.core.providers import GENERIC, PROFILES, Profile, by_name, detect
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.core.response import translate_response
from claude_bridge.proxy.core.stream import translate_sse
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest
from claude_bridge.proxy.models.openai import ChatCompletion

DATA = Path(__file__).parent / "data"
FIXTURES = Path(
    os.environ.get("CLAUDE_BRIDGE_FIXTURES")
    or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
)
ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
CTX = ReplyContext(model="claude-sonnet-4-5", message_id="msg_01PROVIDERS00000000000000")
SIGNATURE = "CiQB0e2Kb6t3WUnq2F0Yqj0mXbV1pXQ0j3dJ0Y3c4Q=="
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _translate(
    body: dict[str, Any], profile: str | Profile, model: str = "m", **options: Any
) -> tuple[dict[str, Any], list[str]]:
    request = parse_body(json.dumps(body).encode(), MessagesRequest)
    chosen = profile if isinstance(profile, Profile) else by_name(profile)
    out = translate_request(request, RequestOptions(model=model, profile=chosen, **options))
    return out.body, out.dropped


def _follow_up(blocks: list[dict[str, Any]], tools: list[Any] | None = None) -> dict[str, Any]:
    return follow_up(blocks, tools or [WEATHER], model="claude-sonnet-4-5", max_tokens=1000)


def _stream_blocks(body: bytes, ctx: ReplyContext = CTX) -> list[dict[str, Any]]:
    return content_blocks(translate_sse(body, ctx))


# -- detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://eu.api.openai.com/v1", "openai"),
        ("https://myres.openai.azure.com/openai/deployments/gpt-4o", "azure"),
        ("https://myres.cognitiveservices.azure.com/openai/v1", "azure"),
        ("https://myproj.services.ai.azure.com/openai/v1/", "azure"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.deepseek.com", "deepseek"),
        ("https://api.deepseek.com/v1", "deepseek"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "gemini"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://api.x.ai/v1", "xai"),
        ("https://api.mistral.ai/v1", "mistral"),
        ("https://ollama.com/v1", "ollama"),
        ("http://localhost:11434/v1", "ollama"),
        ("http://127.0.0.1:8000/v1", "vllm"),
        ("http://[::1]:8000/v1", "vllm"),
        ("http://gpu-box.lan:8080/v1", "llamacpp"),
        ("http://localhost:1234/v1", "lmstudio"),
        ("HTTPS://API.GROQ.COM/openai/v1", "groq"),
        ("https://key:secret@gateway.example.com/v1?x=1", "generic"),
        ("http://localhost:4000", "generic"),
        ("https://api.openai.com.evil.example/v1", "generic"),
        ("https://notapi.openai.com/v1", "generic"),
        ("api.groq.com", "groq"),
        ("api.mistral.ai:443", "mistral"),
    ],
)
def test_detect_by_host(base_url: str, expected: str) -> None:
    assert detect(base_url).name == expected


@pytest.mark.parametrize(
    ("base_url", "model", "alnum"),
    [
        ("http://localhost:8000/v1", "mistralai/Devstral-Small-2507", 9),
        ("https://openrouter.ai/api/v1", "mistralai/mistral-large-2411", 9),
        ("http://localhost:11434/v1", "ministral-3:8b", 9),
        ("http://localhost:4000", "codestral-latest", 9),
        ("http://localhost:8000/v1", "Qwen/Qwen3-32B", None),
        ("https://api.openai.com/v1", "gpt-5", None),
    ],
)
def test_mistral_models_get_nine_character_ids_anywhere(
    base_url: str, model: str, alnum: int | None
) -> None:
    profile = detect(base_url, model)
    assert profile.tool_id_alnum == alnum
    assert profile.name == detect(base_url).name


def test_a_configured_provider_wins_over_detection() -> None:
    assert providers.resolve("deepseek", "http://localhost:4000", "x").name == "deepseek"
    assert providers.resolve(" Azure ", "https://api.openai.com/v1", "x").name == "azure"
    assert providers.resolve(None, "https://api.openai.com/v1", "gpt-5").name == "openai"
    assert providers.resolve("vllm", "http://h:9", "devstral").tool_id_alnum == 9


def test_unknown_provider_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown provider 'openia'.*openai.*lmstudio"):
        by_name("openia")


def test_profile_table_is_consistent() -> None:
    ports = [port for p in PROFILES.values() for port in p.ports]
    assert len(ports) == len(set(ports))
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert all(h == h.lower() for h in profile.hosts)
        for pattern in (
            profile.reasoning_models,
            profile.effort_models,
            profile.signed_reasoning_models,
            profile.cache_control_models,
        ):
            re.compile(pattern)
        assert set(profile.effort_values) <= {"none", "minimal", "low", "medium", "high", "xhigh"}
        assert profile.auth_header in ("authorization", "api-key")


# -- the edge's helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "base_url", "expected"),
    [
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"),
        (
            "azure",
            "https://r.openai.azure.com/openai/deployments/gpt-4o",
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
            f"?api-version={providers.AZURE_API_VERSION}",
        ),
        (
            "azure",
            "https://r.openai.azure.com/openai/deployments/o3/?api-version=2024-10-21",
            "https://r.openai.azure.com/openai/deployments/o3/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            "azure",
            "https://r.openai.azure.com/openai/v1",
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
        ("generic", "http://h/v1?key=1", "http://h/v1/chat/completions?key=1"),
    ],
)
def test_chat_completions_url(provider: str, base_url: str, expected: str) -> None:
    assert providers.chat_completions_url(base_url, by_name(provider)) == expected


def test_azure_api_version_can_be_given() -> None:
    url = providers.chat_completions_url(
        "https://r.openai.azure.com/openai/deployments/d", by_name("azure"), "2025-01-01"
    )
    assert url.endswith("?api-version=2025-01-01")


def test_auth_headers() -> None:
    assert providers.auth_headers(by_name("azure"), "k") == {"api-key": "k"}
    assert providers.auth_headers(by_name("openai"), "k") == {"authorization": "Bearer k"}
    assert providers.auth_headers(by_name("ollama"), None) == {}


def test_options_default_to_the_generic_profile() -> None:
    assert RequestOptions(model="m").profile is GENERIC


def test_recorded_options_replay_with_their_profile() -> None:
    """The journal records `asdict(options)`; replay rebuilds `RequestOptions(**recorded)`."""
    options = RequestOptions(model="devstral", profile=detect("http://h:8000", "devstral"))
    recorded = json.loads(json.dumps(dataclasses.asdict(options)))
    assert RequestOptions(**recorded) == options
    assert RequestOptions(model="m", profile="openrouter").profile is by_name("openrouter")  # type: ignore[arg-type]
    assert providers.coerce(None) is GENERIC


@pytest.mark.parametrize(
    ("provider", "wanted", "sent"),
    [
        ("generic", "low", "low"),
        ("generic", "xhigh", "high"),
        ("generic", "max", "high"),
        ("openrouter", "max", "xhigh"),
        ("openrouter", "xhigh", "xhigh"),
        ("xai", "medium", "high"),
        ("xai", "low", "low"),
    ],
)
def test_effort_maps_to_the_nearest_accepted_value(provider: str, wanted: str, sent: str) -> None:
    assert by_name(provider).effort(wanted) == sent


# -- request rules -------------------------------------------------------------------------


def test_openai_sends_reasoning_effort_only_to_reasoning_models() -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "temperature": 0.5,
        "messages": [{"role": "user", "content": "hi"}],
        "output_config": {"effort": "medium"},
    }
    chat, dropped = _translate(body, "openai", "gpt-4.1")
    assert "reasoning_effort" not in chat and chat["temperature"] == 0.5
    assert "reasoning_effort (not accepted by gpt-4.1)" in dropped
    reasoning, dropped = _translate(body, "openai", "o3")
    assert reasoning["reasoning_effort"] == "medium" and "temperature" not in reasoning
    assert "temperature (not accepted by o3)" in dropped
    # The default temperature is accepted, so it is not dropped.
    assert _translate({**body, "temperature": 1}, "openai", "gpt-5")[0]["temperature"] == 1


def test_groq_takes_effort_for_gpt_oss_only() -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 9000},
    }
    assert _translate(body, "groq", "openai/gpt-oss-120b")[0]["reasoning_effort"] == "high"
    assert "reasoning_effort" not in _translate(body, "groq", "llama-3.3-70b-versatile")[0]


def test_openrouter_forwards_cache_control_only_for_claude_and_gemini() -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
    }
    claude, _ = _translate(body, "openrouter", "anthropic/claude-sonnet-4.5")
    assert claude["messages"][0]["content"] == [
        {"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}
    ]
    assert claude["messages"][1]["content"][2]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in claude["messages"][1]["content"][0]
    gemini, _ = _translate(body, "openrouter", "google/gemini-2.5-pro")
    assert "cache_control" in json.dumps(gemini)
    for model in ("openai/gpt-5", "deepseek/deepseek-chat"):
        other, _ = _translate(body, "openrouter", model)
        assert "cache_control" not in json.dumps(other)
        assert other["messages"][0]["content"] == "s"
    # Other providers never see it.
    assert "cache_control" not in json.dumps(_translate(body, "openai", "gpt-5")[0])


def test_openrouter_keeps_the_thinking_budget_below_a_capped_max_tokens() -> None:
    body = {
        "model": "c",
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [{"role": "user", "content": "hi"}],
    }
    sent, dropped = _translate(body, "openrouter", "anthropic/x", max_tokens_cap=8192)
    assert sent["max_tokens"] == 8192 and sent["reasoning"] == {"max_tokens": 8191}
    assert "thinking budget above max_tokens (sent 8191)" in dropped
    adaptive = {**body, "thinking": {"type": "adaptive"}}
    assert _translate(adaptive, "openrouter", "x")[0]["reasoning"] == {"enabled": True}
    assert (
        "reasoning" not in _translate({**body, "thinking": {"type": "disabled"}}, "openrouter")[0]
    )


def test_mistral_gets_only_the_fields_it_accepts() -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "stream": True,
        "metadata": {"user_id": "u"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    sent, dropped = _translate(body, "mistral", "mistral-small-latest")
    assert set(sent) == {"model", "messages", "max_tokens", "stream"}
    assert "stream_options (not accepted by Mistral)" in dropped
    assert "user (not accepted by Mistral)" in dropped


def test_the_settings_switch_turns_every_reasoning_style_off() -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "messages": [{"role": "user", "content": "hi"}],
    }
    for name in ("generic", "openrouter", "deepseek", "vllm"):
        sent, _ = _translate(body, name, "m", reasoning_effort=False)
        assert not {"reasoning_effort", "reasoning", "thinking", "chat_template_kwargs"} & set(sent)


# -- tool ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_id",
    [
        "toolu_01A09q90qw90lq917835lq9",
        "toolu_bdrk_01Bh9pXJq6PqJ5f3HrPYS4UrAbCdEfGh",
        "call_IUonKM9GCNis5eMRHuusMqoy",
        "D681PevKs",
        tool_id_to_client("functions.add:0", "s"),
        tool_id_to_client("call_1", "s", Carried(extra_content={"google": {"x": 1}})),
    ],
)
@pytest.mark.parametrize("provider", ["openai", "mistral"])
def test_fitted_ids_pair_calls_with_results_on_every_turn(client_id: str, provider: str) -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": client_id, "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": client_id,
                        "content": [
                            {"type": "text", "text": "ok"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "AA==",
                                },
                            },
                        ],
                    }
                ],
            },
        ],
    }
    first, _ = _translate(body, provider)
    again, _ = _translate(body, provider)
    assert first == again  # no state: the same history always gives the same ids
    call_id = first["messages"][1]["tool_calls"][0]["id"]
    assert first["messages"][2]["tool_call_id"] == call_id
    assert first["messages"][3]["content"][0]["text"] == f"Output of tool call {call_id}:"
    if provider == "mistral":
        assert re.fullmatch(r"[a-zA-Z0-9]{9}", call_id)
    else:
        assert len(call_id) <= 40
    upstream = tool_id_to_upstream(client_id)
    if provider == "openai" and len(upstream) <= 40:
        assert call_id == upstream  # ids within the rules pass untouched


@pytest.mark.parametrize(
    "upstream_id", ["x" * 41, "toolu_01A09q90qw90lq917835lq9", "call_00_abc", "A1b2C3d4E"]
)
def test_fit_tool_id_is_stable_and_idempotent(upstream_id: str) -> None:
    for rules in ({"max_length": 40}, {"alnum_length": 9}):
        fitted = fit_tool_id(upstream_id, **rules)  # type: ignore[arg-type]
        assert fitted == fit_tool_id(upstream_id, **rules)  # type: ignore[arg-type]
        assert fit_tool_id(fitted, **rules) == fitted  # type: ignore[arg-type]
        assert ANTHROPIC_ID.match(fitted)


# -- thought-signature carriers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "carried",
    [
        Carried(extra_content={"google": {"thought_signature": SIGNATURE}}),
        Carried(extra_content={"google": {"thought_signature": "not base64: …"}}),
        Carried(extra_content={"vertex": {"thought_signature": SIGNATURE}, "other": [1, None]}),
        Carried(
            reasoning_detail={
                "type": "reasoning.encrypted",
                "data": "EjQKMgEMOdbHkJxR6ymAEgQGz1qCdA0vBnhty0KPBjiAVrJ/Hf5kChgp6eGY0f0J+HoLlFtA",
                "format": "google-gemini-v1",
                "id": "tool_add_1",
                "index": 3,
            }
        ),
        Carried(
            reasoning_detail={"type": "reasoning.encrypted", "data": "=bad=", "id": "tool_add_1"}
        ),
        Carried(
            extra_content={"google": {"thought_signature": SIGNATURE}},
            reasoning_detail={"type": "reasoning.encrypted", "data": "x", "id": "tool_add_1"},
        ),
    ],
)
@pytest.mark.parametrize("upstream_id", ["tool_add_1", "functions.add:0", "ü" * 50])
def test_carried_signatures_round_trip(carried: Carried, upstream_id: str) -> None:
    if carried.reasoning_detail:
        detail = {**carried.reasoning_detail, "id": upstream_id}
        carried = dataclasses.replace(carried, reasoning_detail=detail)
    client_id = tool_id_to_client(upstream_id, "msg:0", carried)
    assert client_id.startswith(CARRIER_ID_PREFIX)
    assert ANTHROPIC_ID.match(client_id)
    assert decode_tool_id(client_id) == (upstream_id, carried)
    assert tool_id_to_upstream(client_id) == upstream_id


def test_a_call_without_an_id_keeps_its_signature() -> None:
    carried = Carried(extra_content={"google": {"thought_signature": SIGNATURE}})
    client_id = tool_id_to_client(None, "msg:0", carried)
    upstream_id, back = decode_tool_id(client_id)
    assert upstream_id == tool_id_to_client(None, "msg:0") and back == carried


@pytest.mark.parametrize(
    "client_id",
    [CARRIER_ID_PREFIX + "!!!", CARRIER_ID_PREFIX + "AQ", CARRIER_ID_PREFIX + "BQAA", "toolu_cbs_"],
)
def test_damaged_carriers_pass_unchanged(client_id: str) -> None:
    assert decode_tool_id(client_id) == (client_id, None)


def test_upstream_ids_that_look_like_ours_are_encoded() -> None:
    for upstream_id in ("toolu_cbs_AQAB", "toolu_cbX"):
        client_id = tool_id_to_client(upstream_id, "s")
        assert client_id != upstream_id and tool_id_to_upstream(client_id) == upstream_id


def test_gemini_signature_goes_back_where_each_upstream_reads_it() -> None:
    completion = ChatCompletion.model_validate(
        json.loads((DATA / "responses" / "gemini_thought_signatures.openai.json").read_text())
    )
    blocks = translate_response(completion, CTX)["content"]
    follow_up = _follow_up(blocks)
    gemini, _ = _translate(follow_up, "gemini", "gemini-3-flash-preview")
    calls = gemini["messages"][1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_297140", "call_297141"]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert "extra_content" not in calls[1]
    assert [m["tool_call_id"] for m in gemini["messages"][2:4]] == ["call_297140", "call_297141"]
    # A generic server in front of Gemini (a gateway) gets it back too.
    assert _translate(follow_up, "generic")[0]["messages"][1]["tool_calls"][0]["extra_content"]
    # OpenAI rejects fields it does not know: there it is left out, and noted.
    openai, dropped = _translate(follow_up, "openai", "gpt-4o")
    assert "extra_content" not in json.dumps(openai)
    assert "thought signature (not read by OpenAI)" in dropped


def test_openrouter_gemini_signature_goes_back_as_reasoning_details() -> None:
    upstream = (DATA / "stream" / "openrouter_gemini_signature_parallel.openai.sse").read_bytes()
    blocks = _stream_blocks(upstream, ReplyContext(model="c", message_id="msg_x"))
    tools = [{**WEATHER, "name": "add"}, {**WEATHER, "name": "multiply"}]
    sent, _ = _translate(_follow_up(blocks, tools), "openrouter", "google/gemini-3.1-flash-lite")
    assistant = sent["messages"][1]
    assert [c["id"] for c in assistant["tool_calls"]] == [
        "tool_add_kZJN6iFNozVOBiXBMA2Y",
        "tool_multiply_7Pq02EcannPbKks8kXlA",
    ]
    # Exactly the detail OpenRouter sent, unchanged.
    chunk = next(
        json.loads(line[6:])
        for line in upstream.decode().splitlines()
        if "reasoning.encrypted" in line
    )
    assert assistant["reasoning_details"] == chunk["choices"][0]["delta"]["reasoning_details"]


@pytest.mark.skipif(not FIXTURES.exists(), reason=f"no captures in {FIXTURES}")
def test_openrouter_claude_thinking_goes_back_as_captured() -> None:
    """The shared capture of OpenRouter serving Claude, and the request the real client sent
    next: the thinking we emitted must go back exactly as that client sent it."""
    capture = FIXTURES / "openai_compat"
    upstream = (
        capture / "openrouter_claude_reasoning_details_signature_tool_stream.sse"
    ).read_bytes()
    passback = json.loads(
        (
            capture / "openrouter_claude_after_reasoning_details_passback_stream.request.json"
        ).read_text()
    )["body"]
    blocks = _stream_blocks(upstream, ReplyContext(model="c", message_id="msg_x"))
    tools = [{**WEATHER, "name": "weather"}]
    sent, _ = _translate(_follow_up(blocks, tools), "openrouter", passback["model"])
    expected = next(m for m in passback["messages"] if m.get("reasoning_details"))
    assistant = sent["messages"][1]
    assert assistant["reasoning_details"] == expected["reasoning_details"]
    assert assistant["tool_calls"][0]["id"] == expected["tool_calls"][0]["id"]


@pytest.mark.skipif(not FIXTURES.exists(), reason=f"no captures in {FIXTURES}")
def test_deepseek_reasoning_goes_back_on_the_next_request() -> None:
    capture = FIXTURES / "openai_compat" / "deepseek_chat_text_then_tool_call_stream.sse"
    blocks = _stream_blocks(capture.read_bytes())
    thinking = "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    sent, _ = _translate(_follow_up(blocks), "deepseek", "deepseek-reasoner")
    assistant = sent["messages"][1]
    assert assistant["tool_calls"]
    assert assistant["reasoning_content"] == thinking  # "" when the turn had none


def test_deepseek_gets_reasoning_content_on_every_assistant_message() -> None:
    body = {
        "model": "c",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    }
    sent, _ = _translate(body, "deepseek", "deepseek-chat")
    assert sent["messages"][1] == {"role": "assistant", "content": "b", "reasoning_content": ""}
    # Others never see the hidden key or the field.
    for name in PROFILES:
        if name != "deepseek":
            assert "reasoning_content" not in json.dumps(_translate(body, name)[0])


@pytest.mark.parametrize(
    ("base_url", "url"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/messages"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1/messages"),
        ("https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/messages"),
        ("https://api.deepseek.com/anthropic", "https://api.deepseek.com/anthropic/v1/messages"),
        ("https://gw.example/v1?key=x", "https://gw.example/v1/messages?key=x"),
    ],
)
def test_pass_through_messages_url(base_url: str, url: str) -> None:
    assert providers.messages_url(base_url) == url


def test_pass_through_auth_headers() -> None:
    assert providers.anthropic_headers("127.0.0.1:8080", "k") == {
        "x-api-key": "k",
        "authorization": "Bearer k",
    }
    assert providers.anthropic_headers("api.anthropic.com", "k") == {"x-api-key": "k"}
    assert providers.anthropic_headers("127.0.0.1:8080", None) == {}
