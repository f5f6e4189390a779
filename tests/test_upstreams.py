"""Several named upstreams in one server, chosen by ordered routing rules: each request goes to
its upstream's URL with its key, its provider's rules and its mode, over real HTTP with the SDK.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, TextBlock
from conftest import BIG_MODEL, CLIENT_KEY, UPSTREAM_KEY, Bridge, make_client, start_bridge
from typer.testing import CliRunner
from upstream import FakeUpstream, JSONReply, SSEReply, completion, text_stream

from claude_bridge.cli.main import app as cli_app
from claude_bridge.cli.render import models, upstreams_label
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import ConfigError, load_settings
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.logs import exchange_record

HI: list[MessageParam] = [{"role": "user", "content": "Hi"}]
LOCAL_KEY = "sk-local-TESTKEY-0987654321"


@pytest.fixture
def other(second_upstream: FakeUpstream) -> FakeUpstream:
    return second_upstream


def anthropic_message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_native",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-6",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


@pytest.fixture
def routed_bridge(make_bridge: Callable[..., Bridge], other: FakeUpstream) -> Bridge:
    root = f"http://127.0.0.1:{other.port}"
    return make_bridge(
        upstreams={
            "local": {"base_url": other.base_url, "api_key": LOCAL_KEY, "provider": "azure"},
            "native": {"base_url": root, "api_key": LOCAL_KEY, "mode": "anthropic"},
        },
        routes=[
            {"pattern": "*haiku*", "upstream": "local", "model": "qwen3-4b"},
            {"pattern": "claude-opus-*", "upstream": "native"},
        ],
        auth_token=CLIENT_KEY,
    )


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


def test_rules_send_each_model_to_its_upstream(
    routed_bridge: Bridge, upstream: FakeUpstream, other: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("from the default")))
    other.reply(JSONReply(completion("from local")), JSONReply(anthropic_message("from native")))
    with make_client(routed_bridge) as sdk:
        sonnet = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=HI)
        haiku = sdk.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        opus = sdk.messages.create(model="claude-opus-4-6", max_tokens=8, messages=HI)
    assert (text_of(sonnet), text_of(haiku), text_of(opus)) == (
        "from the default",
        "from local",
        "from native",
    )

    (default_request,) = upstream.requests
    assert default_request.path == "/v1/chat/completions"
    assert default_request.json["model"] == BIG_MODEL
    assert default_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

    local_request, native_request = other.requests
    assert local_request.path == "/v1/chat/completions"
    assert local_request.json["model"] == "qwen3-4b"
    # The azure profile applies to this upstream only: its key goes in `api-key`.
    assert local_request.headers["api-key"] == LOCAL_KEY
    assert "authorization" not in local_request.headers
    assert "api-key" not in default_request.headers

    assert native_request.path == "/v1/messages"
    assert native_request.json["model"] == "claude-opus-4-6"  # no `model`: the client's name
    assert native_request.json["messages"] == HI
    assert native_request.headers["x-api-key"] == LOCAL_KEY


def test_streams_from_two_upstreams_at_once(
    routed_bridge: Bridge, upstream: FakeUpstream, other: FakeUpstream
) -> None:
    upstream.reply(SSEReply(text_stream(["big ", "answer"]), delay=0.02))
    other.reply(SSEReply(text_stream(["small ", "answer"]), delay=0.02))
    with (
        make_client(routed_bridge) as sdk,
        sdk.messages.stream(model="claude-sonnet-4-6", max_tokens=8, messages=HI) as big,
        sdk.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=HI) as small,
    ):
        texts = (text_of(big.get_final_message()), text_of(small.get_final_message()))
    assert texts == ("big answer", "small answer")
    assert [r.json["model"] for r in upstream.requests + other.requests] == [BIG_MODEL, "qwen3-4b"]


def test_an_upstream_error_names_its_host(
    routed_bridge: Bridge, upstream: FakeUpstream, other: FakeUpstream
) -> None:
    other.reply(JSONReply({"error": {"message": f"bad key {LOCAL_KEY}"}}, status=401))
    with make_client(routed_bridge) as sdk, pytest.raises(anthropic.InternalServerError) as caught:
        sdk.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    assert LOCAL_KEY not in caught.value.message
    assert f"upstream 127.0.0.1:{other.port} refused the API key" in caught.value.message
    assert upstream.requests == []


def test_health_lists_the_upstreams(
    routed_bridge: Bridge, upstream: FakeUpstream, other: FakeUpstream
) -> None:
    health = httpx.get(routed_bridge.url + "/", headers={"x-api-key": CLIENT_KEY}).json()
    assert health["upstream"] == f"127.0.0.1:{upstream.port}"
    assert health["upstreams"] == {
        "default": f"127.0.0.1:{upstream.port}",
        "local": f"127.0.0.1:{other.port}",
        "native": f"127.0.0.1:{other.port}",
    }


def test_listeners_and_the_dashboard_see_the_upstream_name(
    routed_bridge: Bridge, other: FakeUpstream
) -> None:
    bus = Bus()
    finished: list[Exchange] = []
    bus.subscribe(lambda kind, exchange: finished.append(exchange) if kind == "finish" else None)
    settings = routed_bridge.settings
    bridge = start_bridge(settings, create_app(settings, bus=bus))
    other.reply(JSONReply(completion("ok")), JSONReply(anthropic_message("ok")))
    try:
        with make_client(bridge) as sdk:
            sdk.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
            sdk.messages.create(model="claude-opus-4-6", max_tokens=8, messages=HI)
    finally:
        bridge.stop()
    assert [(e.upstream, e.upstream_model) for e in finished] == [
        ("local", "qwen3-4b"),
        ("native", "claude-opus-4-6"),
    ]
    # Each names the rule that routed it (tests/test_routing.py has rules on request features).
    assert [models(e) for e in finished] == [
        "haiku-4-5 → local:qwen3-4b [rule 1]",
        "opus-4-6 → native [rule 2]",
    ]
    assert exchange_record("finish", finished[0])["upstream"] == "local"


# -- the config file ---------------------------------------------------------------------

TOML = """
openai_base_url = "https://openrouter.ai/api/v1"
big_model = "anthropic/claude-sonnet-4.5"

[upstreams.local]
base_url = "http://127.0.0.1:8080/v1"
provider = "llamacpp"

[upstreams.deepseek]
base_url = "https://api.deepseek.com/anthropic"
api_key_env = "DEEPSEEK_API_KEY"
mode = "anthropic"

[[routes]]
pattern = "*haiku*"
upstream = "local"
model = "qwen3"

[[routes]]
pattern = "claude-opus-*"
upstream = "deepseek"
model = "deepseek-chat"
"""


def test_config_file_declares_upstreams_and_keys_come_from_the_environment(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TOML, encoding="utf-8")
    dotenv = tmp_path / ".env"
    dotenv.write_text("DEEPSEEK_API_KEY=sk-deepseek-from-dotenv-123\n", encoding="utf-8")
    settings = load_settings(config_path=config, env={}, dotenv_path=dotenv)
    deepseek = settings.upstreams["deepseek"]
    assert deepseek.api_key is not None
    assert deepseek.api_key.get_secret_value() == "sk-deepseek-from-dotenv-123"
    assert list(settings.endpoints()) == ["default", "local", "deepseek"]
    shown = json.dumps(settings.public())
    assert "sk-deepseek-from-dotenv-123" not in shown and "sk-...23" in shown

    from_env = load_settings(
        config_path=config, env={"DEEPSEEK_API_KEY": "sk-env-wins-4567890"}, dotenv_path=dotenv
    )
    key = from_env.upstreams["deepseek"].api_key
    assert key is not None and key.get_secret_value() == "sk-env-wins-4567890"

    dotenv.unlink()
    with pytest.raises(ConfigError, match=r"upstreams\.deepseek\.api_key_env: DEEPSEEK_API_KEY"):
        load_settings(config_path=config, env={}, dotenv_path=dotenv)


def test_translate_follows_the_routes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TOML, encoding="utf-8")
    request = tmp_path / "request.json"
    env = {"CLAUDE_BRIDGE_CONFIG": str(config), "DEEPSEEK_API_KEY": "sk-deepseek-123456789"}
    runner = CliRunner()

    def translated(model: str) -> Any:
        body = {"model": model, "max_tokens": 8, "messages": HI, "metadata": {"user_id": "u"}}
        request.write_text(json.dumps(body), encoding="utf-8")
        result = runner.invoke(cli_app, ["translate", str(request)], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    opus = translated("claude-opus-4-6")  # passed through: Anthropic's shape, routed model
    assert opus == {
        "model": "deepseek-chat",
        "max_tokens": 8,
        "messages": HI,
        "metadata": {"user_id": "u"},
    }
    haiku = translated("claude-haiku-4-5")  # translated for llama.cpp
    assert haiku["model"] == "qwen3" and haiku["messages"] == [{"role": "user", "content": "Hi"}]
    sonnet = translated("claude-sonnet-4-6")  # the default upstream: OpenRouter's rules
    assert sonnet["model"] == "anthropic/claude-sonnet-4.5" and "user" in sonnet


def test_the_dashboard_header_names_every_upstream(routed_bridge: Bridge) -> None:
    settings = routed_bridge.settings.model_copy(update={"mode": "anthropic"})
    label = upstreams_label(settings)
    assert label.endswith(" (anthropic) + local, native")
    assert label.startswith("127.0.0.1:")
