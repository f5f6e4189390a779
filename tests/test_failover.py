"""Fallback chains and key pools: the configuration, then real servers on loopback.

The end-to-end tests run claude-bridge in front of two fault-injecting upstreams
(tests/upstream.py) with the official `anthropic` SDK (`max_retries=0`) as the client, and the
breakers on a clock the test moves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_bridge.proxy.config import ConfigError, Settings, config_template, load_settings
from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM, Target, route

KEY_1 = "sk-pool-one-0123456789abcdef"
KEY_2 = "sk-pool-two-0123456789abcdef"


# -- configuration -------------------------------------------------------------------------

CHAINS = """\
big_model = ["openrouter:deepseek/deepseek-chat", "groq:llama-3.3-70b", "qwen3:8b"]
small_model = "groq:llama-3.1-8b-instant"

[upstreams.openrouter]
base_url = "https://openrouter.ai/api/v1"
api_keys_env = ["OR_KEY_1", {env = "OR_KEY_2", weight = 3}]

[upstreams.groq]
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_KEY"

[[routes]]
pattern = "*fable*"
upstream = "groq"
model = ["llama-3.3-70b", "openrouter:qwen/qwen3-coder", "gemma"]
"""
ENV = {"OR_KEY_1": KEY_1, "OR_KEY_2": KEY_2, "GROQ_KEY": "gsk-groq-key-0123456789"}


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(config_path=path, env=ENV if env is None else env, dotenv_path=None)


def routed(settings: Settings, name: str) -> tuple[Target, ...]:
    return route(
        name,
        big_model=settings.big_chain(),
        small_model=settings.small_chain(),
        rules=settings.rules(),
        upstreams=settings.upstreams.keys(),
    ).targets


def test_chains_in_toml(tmp_path: Path) -> None:
    settings = load(tmp_path, CHAINS)
    assert routed(settings, "claude-opus-4-5") == (
        Target("openrouter", "deepseek/deepseek-chat"),
        Target("groq", "llama-3.3-70b"),
        Target(DEFAULT_UPSTREAM, "qwen3:8b"),  # not an upstream: Ollama's tag
    )
    assert routed(settings, "claude-haiku-4-5") == (Target("groq", "llama-3.1-8b-instant"),)
    # A rule's plain entries are on its own upstream.
    assert routed(settings, "claude-fable-5-2") == (
        Target("groq", "llama-3.3-70b"),
        Target("openrouter", "qwen/qwen3-coder"),
        Target("groq", "gemma"),
    )


def test_a_single_model_still_routes_as_before(tmp_path: Path) -> None:
    settings = load(tmp_path, 'big_model = "gpt-4o"\nsmall_model = "gpt-4o-mini"\n', env={})
    assert routed(settings, "claude-sonnet-4-5") == (Target(DEFAULT_UPSTREAM, "gpt-4o"),)
    assert settings.big_model == "gpt-4o" and settings.big_model_fallbacks == []


def test_chains_from_the_environment(tmp_path: Path) -> None:
    env = {
        "CLAUDE_BRIDGE_HOME": str(tmp_path),
        "BIG_MODEL": "a, b ,c",
        "SMALL_MODEL": "s",
        "CLAUDE_BRIDGE_SMALL_MODEL_FALLBACKS": "y,z",
    }
    settings = load_settings(env=env, dotenv_path=None)
    assert settings.big_chain() == ["a", "b", "c"]
    assert settings.small_chain() == ["s", "y", "z"]


def test_written_config_reloads_the_same(tmp_path: Path) -> None:
    settings = load(tmp_path, CHAINS)
    again = load(tmp_path, config_template(settings))
    assert again.rules() == settings.rules()
    assert again.big_chain() == settings.big_chain()
    assert again.upstreams["openrouter"].pool() == settings.upstreams["openrouter"].pool()


def test_pool_keys_are_secrets_and_never_shown(tmp_path: Path) -> None:
    settings = load(tmp_path, CHAINS)
    pool = settings.upstreams["openrouter"].pool()
    assert [(k.key.get_secret_value(), k.weight, k.env) for k in pool] == [
        (KEY_1, 1.0, "OR_KEY_1"),
        (KEY_2, 3.0, "OR_KEY_2"),
    ]
    assert {KEY_1, KEY_2} <= set(settings.secrets())
    shown = str(settings.public()) + config_template(settings)
    assert KEY_1 not in shown and KEY_2 not in shown
    literal = load(tmp_path, f'[upstreams.a]\nbase_url = "http://h/v1"\napi_keys = ["{KEY_1}"]\n')
    assert KEY_1 in literal.secrets() and KEY_1 not in config_template(literal)
    rotated = load(tmp_path, CHAINS, {**ENV, "OR_KEY_2": KEY_1})
    assert rotated.fingerprint() != settings.fingerprint()  # `code` reuses no stale server


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            '[upstreams.a]\nbase_url = "http://h/v1"\napi_keys_env = ["NOPE"]\n',
            {},
            "setting upstreams.a.api_keys_env: NOPE is not set",
        ),
        (
            f'[upstreams.a]\nbase_url = "http://h/v1"\napi_key = "{KEY_1}"\n'
            f'api_keys = ["{KEY_2}"]\n',
            {},
            "not both",
        ),
        (
            '[upstreams.a]\nbase_url = "http://h/v1"\napi_keys = [{key = "k", weight = 0}]\n',
            {},
            "setting upstreams.a.api_keys.0.weight: Input should be greater than 0",
        ),
        ('big_model_fallbacks = ["x"]\n', {}, "set big_model"),
    ],
)
def test_bad_pools_and_chains_are_one_line(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, env)
    assert expected in str(raised.value)
    assert KEY_1 not in str(raised.value) and KEY_2 not in str(raised.value)
