"""Context windows and output limits: from a route, the `[models]` table or the genai-prices
dataset; used to lower `max_tokens` and to put numbers in an unsized `prompt is too long`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest
from conftest import BIG_MODEL, Bridge, make_client
from typer.testing import CliRunner
from upstream import FakeUpstream, JSONReply, error_body

from claude_bridge.cli.main import app as cli
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core.catalog import Limits
from claude_bridge.proxy.core.errors import sized_overflow
from claude_bridge.proxy.pricing import dataset_model
from claude_bridge.proxy.windows import Windows, configured

HI: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hi " * 400}]


def test_a_route_beats_the_table_which_beats_the_dataset() -> None:
    settings = Settings(
        openai_base_url="https://api.openai.com/v1",
        routes=[{"pattern": "*haiku*", "model": "gpt-4o-mini", "max_output_tokens": 1000}],
        models={
            "gpt-4o-mini": {"context_window": 50000, "max_output_tokens": 2000},
            "gpt-4*": {"max_output_tokens": 3000},
        },
    )
    windows = Windows(settings)
    assert windows.of("default", "gpt-4o-mini") == Limits(50000, 1000)
    for model in ("gpt-4.1", "gpt-4o"):  # the dataset's window, the table's glob limit
        info = dataset_model("openai", settings.openai_base_url, model)
        assert info is not None and info.context_window
        assert windows.of("default", model) == Limits(info.context_window, 3000)
    assert windows.of("default", "no-such-model") == Limits()
    # Requests only ever read the config: no dataset on the hot path.
    assert configured(settings, "default", "gpt-4.1") == Limits(None, 3000)


def test_self_hosted_models_are_never_sized_from_the_dataset() -> None:
    local = Settings(openai_base_url="http://127.0.0.1:8080/v1")
    assert Windows(local).of("default", "gpt-4o") == Limits()


def test_openrouter_names_fall_back_to_the_makers_entry() -> None:
    routed = Settings(openai_base_url="https://openrouter.ai/api/v1")
    assert Windows(routed).of("default", "anthropic/claude-opus-4-1").context_window == 200000


def test_sized_overflow_wording() -> None:
    unsized = "prompt is too long: the request exceeds the available context size"
    assert sized_overflow(unsized, 8192, 100) == "prompt is too long: 8193 tokens > 8192 maximum"
    assert sized_overflow(unsized, 8192, 9000) == "prompt is too long: 9000 tokens > 8192 maximum"
    sized = "prompt is too long: 9000 tokens > 8192 maximum"
    assert sized_overflow(sized, 4096, 1) == sized
    assert sized_overflow("overloaded", 8192, 1) == "overloaded"


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsized_overflow_gets_the_configured_window(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream, stream: bool
) -> None:
    """llama-server without numbers (a context shift refused): Claude Code gets them."""
    bridge = make_bridge(models={BIG_MODEL: {"context_window": 1000}})
    upstream.reply(
        JSONReply(error_body("the request exceeds the available context size"), status=400)
    )
    with make_client(bridge) as sdk, pytest.raises(anthropic.BadRequestError) as caught:
        if stream:
            with sdk.messages.stream(model="claude-opus-4-6", max_tokens=8, messages=HI) as s:
                s.until_done()
        else:
            sdk.messages.create(model="claude-opus-4-6", max_tokens=8, messages=HI)
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert message.startswith("prompt is too long: ") and message.endswith(" > 1000 maximum")
    assert int(message.split()[4]) > 1000


def test_translate_routes_and_caps_as_serve_does(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'openai_base_url = "http://127.0.0.1:9/v1"\nbig_model = "big"\n'
        '[[routes]]\npattern = "*"\nthinking = true\nmodel = "reasoner"\n'
        "[models.reasoner]\nmax_output_tokens = 4000\n",
        encoding="utf-8",
    )
    body = {
        "model": "claude-opus-4-6",
        "max_tokens": 128000,
        "thinking": {"type": "adaptive"},
        "messages": [{"role": "user", "content": "Hi"}],
    }
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body), encoding="utf-8")
    result = CliRunner().invoke(cli, ["translate", str(request), "--config", str(config)])
    assert result.exit_code == 0, result.output
    sent = json.loads(result.stdout)
    assert (sent["model"], sent["max_tokens"]) == ("reasoner", 4000)
