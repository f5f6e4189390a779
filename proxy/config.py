"""Settings: one model fed by flags, environment, `.env`, a TOML file and defaults.

Precedence, highest first: flags > environment > .env > config file > defaults. Every field
reads `CLAUDE_BRIDGE_<NAME>`; the four that peer proxies made familiar also read their plain
names (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `BIG_MODEL`, `SMALL_MODEL`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .core import providers
from .core.routing import DEFAULT_UPSTREAM, Rule

ENV_PREFIX = "CLAUDE_BRIDGE_"
LEGACY_ENV = {
    "openai_base_url": "OPENAI_BASE_URL",
    "openai_api_key": "OPENAI_API_KEY",
    "big_model": "BIG_MODEL",
    "small_model": "SMALL_MODEL",
}


Mode = Literal["openai", "anthropic"]
"""How an upstream is spoken to: translated to Chat Completions, or passed through to its own
Anthropic `/v1/messages`."""
TOML_ONLY = ("routes", "upstreams")
LogLevel = Literal["debug", "info", "warning", "error"]


def _known_provider(value: str | None) -> str | None:
    if value:
        providers.by_name(value)  # its ValueError lists the known names
    return value


class RouteRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str
    model: str | None = None
    upstream: str = DEFAULT_UPSTREAM


class UpstreamSettings(BaseModel):
    """One named upstream (`[upstreams.<name>]` in the config file)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    """The environment variable (or `.env` entry) holding the key: keeps it out of the file."""
    provider: str | None = None
    mode: Mode = "openai"
    azure_api_version: str | None = None

    _provider = field_validator("provider")(_known_provider)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    openai_base_url: str = Field(
        "https://api.openai.com/v1", description="Base URL of the OpenAI-compatible upstream."
    )
    openai_api_key: SecretStr | None = Field(
        None, description="API key sent upstream (`Authorization: Bearer`; Azure: `api-key`)."
    )
    provider: str | None = Field(
        None,
        description="Upstream's rules profile (openai, openrouter, deepseek, gemini, azure, ...); "
        "unset: detected from the base URL.",
    )
    azure_api_version: str | None = Field(
        None, description="`api-version` for Azure deployment URLs (unset: a recent GA version)."
    )
    big_model: str | None = Field(
        None, description="Upstream model for opus/sonnet (and unmatched) names; unset: as asked."
    )
    small_model: str | None = Field(None, description="Upstream model for haiku names.")
    mode: Mode = Field(
        "openai",
        description="`openai`: translate to Chat Completions; `anthropic`: pass requests "
        "through to the upstream's own `/v1/messages` (llama.cpp, vLLM, Ollama, OpenRouter...).",
    )
    upstreams: dict[str, UpstreamSettings] = Field(
        default_factory=dict,
        description="More upstreams by name: `[upstreams.NAME]` with `base_url`, `api_key_env` "
        "(or `api_key`), `provider`, `mode`, `azure_api_version`.",
    )
    routes: list[RouteRule] = Field(
        default_factory=list,
        description="Ordered `{pattern, model, upstream}` rules (globs on the client model) "
        "tried first; no `upstream`: the default one; no `model`: the client's name.",
    )
    auth_token: SecretStr | None = Field(
        None,
        description="When set, clients must present it as `x-api-key` or `Authorization: Bearer`.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="More `Host` names clients may use (comma-separated in the environment); "
        "loopback names and the address `serve` binds are always accepted, anything else gets "
        "403 (DNS rebinding).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (`https://app.example`) allowed to call the proxy "
        "(comma-separated in the environment); a request with any other `Origin` gets 403.",
    )
    host: str = Field("127.0.0.1", description="Address `serve` binds.")
    port: int = Field(8082, ge=0, le=65535, description="Port `serve` listens on.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to connect upstream.")
    read_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds to wait for upstream bytes before giving up; also the longest a "
        "stream may go without an upstream event, and a non-streaming body may take to arrive.",
    )
    max_connections: int = Field(100, ge=1, description="Upstream connection pool size.")
    pool_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a request may wait for a free upstream connection; past it the "
        "client gets 529 `overloaded_error` with `retry-after`.",
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times to retry an upstream connection failure or 502/503 answer (only "
        "before any byte was relayed; never a 4xx).",
    )
    retry_backoff: float = Field(
        0.5,
        ge=0,
        description="Seconds before the first retry; doubled (with jitter) for each next.",
    )
    stream_usage: bool = Field(
        True,
        description="Send `stream_options.include_usage` (turn off if the upstream rejects it).",
    )
    reasoning_effort: bool = Field(True, description="Map thinking / effort to `reasoning_effort`.")
    max_tokens_cap: int | None = Field(
        None, ge=1, description="Clamp `max_tokens` to what the upstream model allows."
    )
    ping_interval: float = Field(
        10.0, gt=0, description="Seconds of upstream silence before a stream gets a `ping`."
    )
    log_level: LogLevel = Field("info", description="debug, info, warning or error.")
    record: bool = Field(
        False, description="Record every exchange to a journal (`serve --record`)."
    )
    record_dir: str | None = Field(
        None,
        description="Where journals go; unset: `$CLAUDE_BRIDGE_HOME/journal`, else "
        "`$XDG_STATE_HOME/claude-bridge/journal` (`~/.local/state/...`).",
    )
    record_full: bool = Field(
        False, description="Keep large base64 payloads (images, PDFs) in recordings."
    )
    record_redact: list[str] = Field(
        default_factory=list,
        description="More header names whose values recordings leave out (comma-separated in "
        "the environment); secret settings and auth headers always are.",
    )

    _provider = field_validator("provider")(_known_provider)

    @model_validator(mode="after")
    def _routes_name_upstreams(self) -> Settings:
        if DEFAULT_UPSTREAM in self.upstreams:
            raise ValueError(
                f"upstreams.{DEFAULT_UPSTREAM}: that name is the top-level upstream "
                "(openai_base_url); pick another"
            )
        for rule in self.routes:
            if rule.upstream != DEFAULT_UPSTREAM and rule.upstream not in self.upstreams:
                known = ", ".join([DEFAULT_UPSTREAM, *self.upstreams])
                raise ValueError(
                    f"route {rule.pattern!r} names upstream {rule.upstream!r}: "
                    f"declare [upstreams.{rule.upstream}] (known: {known})"
                )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("record_redact", "allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def rules(self) -> list[Rule]:
        return [Rule(r.pattern, r.model, r.upstream) for r in self.routes]

    def endpoints(self) -> dict[str, UpstreamSettings]:
        """Every upstream by name: the top-level one as `default`, then the declared ones."""
        default = UpstreamSettings(
            base_url=self.openai_base_url,
            api_key=self.openai_api_key,
            provider=self.provider,
            mode=self.mode,
            azure_api_version=self.azure_api_version,
        )
        return {DEFAULT_UPSTREAM: default, **self.upstreams}

    def public(self) -> dict[str, Any]:
        """The settings with secrets masked: for `config show`, logs and the dashboard."""
        data = self.model_dump(mode="json")
        for name in ("openai_api_key", "auth_token"):
            data[name] = _masked(getattr(self, name))
        for name, upstream in self.upstreams.items():
            data["upstreams"][name]["api_key"] = _masked(upstream.api_key)
        return data


def _masked(secret: SecretStr | None) -> str | None:
    return mask(secret.get_secret_value()) if secret else None


def mask(secret: str) -> str:
    return "****" if len(secret) < 12 else f"{secret[:3]}...{secret[-2:]}"


class ConfigError(Exception):
    pass


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(f"{ENV_PREFIX}CONFIG"):
        return Path(env[f"{ENV_PREFIX}CONFIG"])
    if env.get(f"{ENV_PREFIX}HOME"):
        return Path(env[f"{ENV_PREFIX}HOME"]) / "config.toml"
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "claude-bridge" / "config.toml"


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; `export`, comments and quotes as shells and python-dotenv allow."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name in TOML_ONLY:
            continue
        for key in (f"{ENV_PREFIX}{name.upper()}", LEGACY_ENV.get(name)):
            if key and env.get(key, "") != "":
                found[name] = env[key]
                break
    return found


def load_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_path: Path | None = Path(".env"),
) -> Settings:
    env = os.environ if env is None else env
    path = config_path or default_config_path(env)
    layers: list[dict[str, Any]] = []
    if path.is_file():
        try:
            layers.append(tomllib.loads(path.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    elif config_path is not None:
        raise ConfigError(f"{path}: no such config file")
    dotenv = read_dotenv(dotenv_path) if dotenv_path is not None else {}
    layers.append(_from_env(dotenv))
    layers.append(_from_env(env))
    layers.append({k: v for k, v in (flags or {}).items() if v is not None})
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = "".join(f" {p}" if i == 0 else f".{p}" for i, p in enumerate(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"setting{where}: {message}") from None
    for name, upstream in settings.upstreams.items():
        if upstream.api_key is None and upstream.api_key_env:
            key = env.get(upstream.api_key_env) or dotenv.get(upstream.api_key_env)
            if not key:
                raise ConfigError(
                    f"setting upstreams.{name}.api_key_env: {upstream.api_key_env} is not set"
                )
            upstream.api_key = SecretStr(key)
    return settings


def config_template(settings: Settings) -> str:
    """TOML for `config init`: the effective settings, secrets left out."""
    data = settings.model_dump(
        mode="json",
        exclude_none=True,
        exclude={"openai_api_key": True, "auth_token": True, "upstreams": {"__all__": {"api_key"}}},
    )
    header = (
        "# claude-bridge configuration. Environment variables and flags override these.\n"
        "# Keep the API key in the environment (OPENAI_API_KEY), not in this file.\n"
    )
    return header + tomli_w.dumps(data)


def reference_markdown() -> str:
    """The configuration table of the README, generated so it cannot drift from the code."""
    rows = [
        "| setting (TOML) | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        env = f"`{ENV_PREFIX}{name.upper()}`"
        if name in LEGACY_ENV:
            env = f"`{LEGACY_ENV[name]}`, {env}"
        if name in TOML_ONLY:
            env = "(TOML only)"
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            default = str(default).lower()
        shown = "unset" if default is None else f"`{default}`" if default else "none"
        rows.append(f"| `{name}` | {env} | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"
