"""Settings: flags > environment > .env > TOML file > defaults, secrets masked when shown."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from claude_bridge.proxy.config import (
    ConfigError,
    Settings,
    config_template,
    default_config_path,
    load_settings,
    mask,
    read_dotenv,
)
from claude_bridge.proxy.core.routing import Rule

KEY = "sk-proj-Zx81TESTKEYabcdefghijklmnopQR"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A config file and a .env file in a temporary directory, both absent at first."""
    return tmp_path / "config.toml", tmp_path / ".env"


def load(
    config: Path,
    dotenv: Path,
    env: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Settings:
    return load_settings(
        flags=flags,
        config_path=None,
        env={"CLAUDE_BRIDGE_CONFIG": str(config), **(env or {})},
        dotenv_path=dotenv,
    )


def test_defaults(files: tuple[Path, Path]) -> None:
    settings = load(*files)
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert settings.openai_api_key is None
    assert settings.big_model is None and settings.small_model is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8082)
    assert settings.stream_usage is True and settings.reasoning_effort is True
    assert settings.max_tokens_cap is None
    assert settings.routes == [] and settings.rules() == []


def test_precedence_flags_env_dotenv_toml_defaults(files: tuple[Path, Path]) -> None:
    config, dotenv = files
    config.write_text(
        'port = 9001\nbig_model = "toml-big"\nsmall_model = "toml-small"\n'
        'host = "0.0.0.0"\nlog_level = "warning"\n',
        encoding="utf-8",
    )
    dotenv.write_text(
        "CLAUDE_BRIDGE_PORT=9002\nBIG_MODEL=dotenv-big\nCLAUDE_BRIDGE_HOST=10.0.0.1\n",
        encoding="utf-8",
    )
    env = {"CLAUDE_BRIDGE_PORT": "9003", "CLAUDE_BRIDGE_BIG_MODEL": "env-big"}
    settings = load(config, dotenv, env, flags={"port": 9004, "host": None})
    assert settings.port == 9004  # flag
    assert settings.big_model == "env-big"  # environment over .env and TOML
    assert settings.host == "10.0.0.1"  # .env over TOML; a None flag is "not given"
    assert settings.small_model == "toml-small"  # TOML over the default
    assert settings.log_level == "warning"
    assert settings.read_timeout == 600.0  # default
    assert load(config, dotenv, env).port == 9003
    assert load(config, dotenv).port == 9002
    assert load(config, dotenv.with_name("missing.env")).port == 9001


@pytest.mark.parametrize(
    ("legacy", "field", "value", "other"),
    [
        ("OPENAI_BASE_URL", "openai_base_url", "http://127.0.0.1:8080/v1", "http://h:9/v1"),
        ("BIG_MODEL", "big_model", "qwen3-coder", "prefixed"),
        ("SMALL_MODEL", "small_model", "qwen3-4b", "prefixed"),
    ],
)
def test_legacy_env_names(
    files: tuple[Path, Path], legacy: str, field: str, value: str, other: str
) -> None:
    assert getattr(load(*files, {legacy: value}), field) == value
    # The prefixed name wins within one layer.
    prefixed = f"CLAUDE_BRIDGE_{field.upper()}"
    assert getattr(load(*files, {legacy: value, prefixed: other}), field) == other


def test_legacy_api_key(files: tuple[Path, Path]) -> None:
    settings = load(*files, {"OPENAI_API_KEY": KEY})
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == KEY
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def test_legacy_name_in_the_environment_beats_prefixed_name_in_dotenv(
    files: tuple[Path, Path],
) -> None:
    config, dotenv = files
    dotenv.write_text("CLAUDE_BRIDGE_BIG_MODEL=from-dotenv\n", encoding="utf-8")
    assert load(config, dotenv, {"BIG_MODEL": "from-env"}).big_model == "from-env"


def test_empty_environment_values_are_unset(files: tuple[Path, Path]) -> None:
    config, dotenv = files
    config.write_text('big_model = "toml-big"\n', encoding="utf-8")
    assert load(config, dotenv, {"BIG_MODEL": "", "CLAUDE_BRIDGE_BIG_MODEL": ""}).big_model == (
        "toml-big"
    )


def test_environment_strings_are_converted(files: tuple[Path, Path]) -> None:
    env = {
        "CLAUDE_BRIDGE_STREAM_USAGE": "false",
        "CLAUDE_BRIDGE_MAX_TOKENS_CAP": "8192",
        "CLAUDE_BRIDGE_READ_TIMEOUT": "30.5",
    }
    settings = load(*files, env)
    assert settings.stream_usage is False
    assert settings.max_tokens_cap == 8192
    assert settings.read_timeout == 30.5


def test_routes_from_toml(files: tuple[Path, Path]) -> None:
    config, dotenv = files
    config.write_text(
        '[[routes]]\npattern = "claude-opus-*"\nmodel = "gpt-5"\n\n'
        '[[routes]]\npattern = "*haiku*"\nmodel = "gpt-5-mini"\n',
        encoding="utf-8",
    )
    assert load(config, dotenv).rules() == [
        Rule("claude-opus-*", "gpt-5"),
        Rule("*haiku*", "gpt-5-mini"),
    ]


def test_public_masks_the_key(files: tuple[Path, Path]) -> None:
    public = load(*files, {"OPENAI_API_KEY": KEY}).public()
    assert public["openai_api_key"] == "sk-...QR"
    assert KEY not in str(public)
    assert public["port"] == 8082
    assert load(*files).public()["openai_api_key"] is None


def test_mask() -> None:
    assert mask("short") == "****"
    assert mask("sk-12345678") == "****"
    assert mask("sk-123456789") == "sk-...89"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("port = \n", "config.toml: "),
        ("port = 9000\nport = 9001\n", "config.toml: "),
        ("[routes\n", "config.toml: "),
        ('port = "many"\n', "setting port: "),
        ("port = 70000\n", "setting port: "),
        ('unknown_setting = "x"\n', "setting unknown_setting: "),
        ('[[routes]]\nmodel = "x"\n', "setting routes.0.pattern: "),
        (
            '[[routes]]\npattern = "x"\nupstream = "nope"\n',
            "setting: route 'x' names upstream 'nope': declare [upstreams.nope] (known: default)",
        ),
        ('[upstreams.default]\nbase_url = "http://x"\n', "that name is the top-level upstream"),
        ('[upstreams.a]\nbase_url = "http://x"\nmode = "grpc"\n', "setting upstreams.a.mode: "),
        ('[upstreams.a]\nbase_url = "http://x"\nprovider = "x"\n', "unknown provider 'x'"),
    ],
)
def test_bad_config_files(files: tuple[Path, Path], toml: str, message: str) -> None:
    config, dotenv = files
    config.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(config, dotenv)
    assert message in str(caught.value)


def test_undecodable_config_file(files: tuple[Path, Path]) -> None:
    config, dotenv = files
    config.write_bytes(b"port = 1\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load(config, dotenv)


def test_an_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(config_path=tmp_path / "nope.toml", env={}, dotenv_path=None)
    # The default location may be missing: defaults apply.
    settings = load_settings(env={"CLAUDE_BRIDGE_HOME": str(tmp_path)}, dotenv_path=None)
    assert settings.port == 8082


def test_bad_environment_value(files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="setting port"):
        load(*files, {"CLAUDE_BRIDGE_PORT": "eighty"})


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = str(tmp_path / "elsewhere.toml")
    assert default_config_path({"CLAUDE_BRIDGE_CONFIG": explicit}) == Path(explicit)
    home = str(tmp_path / "cb-home")
    assert default_config_path({"CLAUDE_BRIDGE_HOME": home}) == Path(home) / "config.toml"
    assert default_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "claude-bridge" / "config.toml"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert (
        default_config_path({}) == tmp_path / "user" / ".config" / "claude-bridge" / "config.toml"
    )


def test_read_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n"
        "\n"
        "export OPENAI_API_KEY=sk-abc\n"
        'BIG_MODEL="qwen3 coder"\n'
        "SMALL_MODEL='qwen3-4b'\n"
        "CLAUDE_BRIDGE_PORT=9000  # the port\n"
        "CLAUDE_BRIDGE_HOST = 0.0.0.0\n"
        "URL=http://h/v1?a=b#frag\n"
        "not a pair\n",
        encoding="utf-8",
    )
    assert read_dotenv(dotenv) == {
        "OPENAI_API_KEY": "sk-abc",
        "BIG_MODEL": "qwen3 coder",
        "SMALL_MODEL": "qwen3-4b",
        "CLAUDE_BRIDGE_PORT": "9000",
        "CLAUDE_BRIDGE_HOST": "0.0.0.0",
        "URL": "http://h/v1?a=b#frag",
    }
    assert read_dotenv(tmp_path / "missing.env") == {}


def _without_secrets(settings: Settings) -> Settings:
    secrets = {name: None for name, value in settings if isinstance(value, SecretStr)}
    return settings.model_copy(update=secrets)


def test_config_template_round_trips(files: tuple[Path, Path]) -> None:
    config, dotenv = files
    config.write_text(
        'big_model = "gpt-5"\nmax_tokens_cap = 16000\nstream_usage = false\n'
        '[[routes]]\npattern = "*haiku*"\nmodel = "gpt-5-mini"\n',
        encoding="utf-8",
    )
    settings = load(config, dotenv, {"OPENAI_API_KEY": KEY, "CLAUDE_BRIDGE_PORT": "9100"})
    text = config_template(settings)
    assert KEY not in text and "openai_api_key" not in text
    assert text.startswith("#")
    loaded = Settings.model_validate(tomllib.loads(text))
    assert loaded == _without_secrets(settings)
    assert loaded.port == 9100 and loaded.rules() == [Rule("*haiku*", "gpt-5-mini")]
    # Written and read back as a config file, it loads to the same settings.
    config.write_text(text, encoding="utf-8")
    assert load(config, dotenv) == loaded


def test_config_template_of_defaults(files: tuple[Path, Path]) -> None:
    text = config_template(load(*files))
    assert Settings.model_validate(tomllib.loads(text)) == Settings.model_validate({})
