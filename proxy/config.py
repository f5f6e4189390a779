"""Settings: one model fed by flags, environment, `.env`, a TOML file and defaults.

Precedence, highest first: flags > environment > .env > config file > defaults. Every field
reads `CLAUDE_BRIDGE_<NAME>`; the four that peer proxies made familiar also read their plain
names (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `BIG_MODEL`, `SMALL_MODEL`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import tomli_w
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
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
TOML_ONLY = ("routes", "upstreams", "prices", "models")
LogLevel = Literal["debug", "info", "warning", "error"]
MAX_SECONDS = 1_000_000.0
"""The longest timeout or interval (11.6 days, as good as none): longer ones, `inf` above all,
overflow the event loop's and aiohttp's timers, a traceback on every request."""


def _known_provider(value: str | None) -> str | None:
    if value:
        providers.by_name(value)  # its ValueError lists the known names
    return value


def _base_url(value: str) -> str:
    """An http(s) URL with a host, like `https://api.openai.com/v1`: anything else would fail
    on every request instead of at start."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number 0-65535
    except ValueError:
        raise ValueError("is not a valid URL (like https://api.openai.com/v1)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "must be an http:// or https:// URL with a host, like http://127.0.0.1:8080/v1"
        )
    return value


def _one_authorization(key: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
    """A base URL's `user:password@` is sent as HTTP Basic auth: refused next to a key, which
    would be the same `Authorization` header."""
    url = info.data.get("openai_base_url", info.data.get("base_url"))
    if key is not None and key.get_secret_value() and isinstance(url, str) and _userinfo(url):
        raise ValueError(
            "the base URL has `user:password@` (sent as HTTP Basic auth) and a key is set too; "
            "both would be the Authorization header: keep one"
        )
    return key


def _userinfo(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def url_password(url: str) -> str | None:
    """The password of a base URL's `user:password@`, as sent (percent-decoded)."""
    password = urlsplit(url).password
    return unquote(password) if password else None


def masked_url(url: str) -> str:
    """`url` with the password of its `user:password@` masked, for display."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:****@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def without_credentials(url: str) -> str:
    """`url` without its `user:password@`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class PriceSettings(BaseModel):
    """One model's price (`[prices."MODEL"]`), in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(None, ge=0)
    """Unset: the input price."""
    cache_write: float | None = Field(None, ge=0)
    """Unset: the input price."""


class ModelLimits(BaseModel):
    """What one upstream model holds (`[models."MODEL"]`, or on a route)."""

    model_config = ConfigDict(extra="forbid")
    context_window: int | None = Field(None, ge=1)
    """Tokens of input (and output) the model takes; unset: the genai-prices table's."""
    max_output_tokens: int | None = Field(None, ge=1)
    """The most it writes in one answer: `max_tokens` above it is lowered to it."""


RequestClass = Literal["main", "subagent", "workflow", "compaction", "auxiliary"]
"""Claude Code's request classes (its `x-claude-code-request-class` gateway hint)."""


class RouteRule(ModelLimits):
    """One `[[routes]]` rule: a glob on the client's model name and, optionally, what the
    request must hold (`core.features`); the model and upstream it sends a match to."""

    model_config = ConfigDict(extra="forbid")
    pattern: str
    """Required, so that a rule that forgot it is no silent catch-all: `"*"` says so."""
    model: str | None = None
    upstream: str = DEFAULT_UPSTREAM
    thinking: bool | None = None
    min_input_tokens: int | None = Field(None, ge=0)
    images: bool | None = None
    request_class: RequestClass | None = None


class UpstreamSettings(BaseModel):
    """One named upstream (`[upstreams.<name>]` in the config file)."""

    # Errors never echo a value: it may be a key, or a URL with a password.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    """The environment variable (or `.env` entry) holding the key: keeps it out of the file."""
    provider: str | None = None
    mode: Mode = "openai"
    azure_api_version: str | None = None

    _provider = field_validator("provider")(_known_provider)
    _url = field_validator("base_url")(_base_url)
    _auth = field_validator("api_key")(_one_authorization)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    openai_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible upstream; a `user:password@` in it is "
        "sent as HTTP Basic auth (then leave the API key unset).",
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
        "tried first; no `upstream`: the default one; no `model`: the client's name. A rule "
        "may also ask `thinking`, `min_input_tokens`, `images`, `request_class` (`subagent`, "
        "`compaction`, `auxiliary`, `workflow`, `main`) of the request.",
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
    host: str = Field("127.0.0.1", min_length=1, description="Address `serve` binds.")
    port: int = Field(8082, ge=0, le=65535, description="Port `serve` listens on.")
    connect_timeout: float = Field(
        10.0, gt=0, le=MAX_SECONDS, description="Seconds to connect upstream."
    )
    read_timeout: float = Field(
        600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds to wait for upstream bytes before giving up; also the longest a "
        "stream may go without an upstream event, and a non-streaming body may take to arrive.",
    )
    max_connections: int = Field(100, ge=1, description="Upstream connection pool size.")
    pool_timeout: float = Field(
        30.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds a request may wait for a free upstream connection; past it the "
        "client gets 529 `overloaded_error` with `retry-after`.",
    )
    max_client_connections: int | None = Field(
        None,
        ge=1,
        description="Client connections open at once; one more gets 503 `overloaded_error` "
        "with `retry-after`. Unset: what the open-file limit (`ulimit -n`) leaves after the "
        "upstream pool and a reserve for files.",
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
        le=MAX_SECONDS,
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
        10.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds of upstream silence before a stream gets a `ping`.",
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
    prices: dict[str, PriceSettings] = Field(
        default_factory=dict,
        description="USD per million tokens by upstream model (globs as in `routes`): "
        '`[prices."deepseek-chat"]` with `input`, `output`, `cache_read`, `cache_write` (unset: '
        "the input price). Beats the upstream's reported cost and the genai-prices table; a "
        "local server costs 0 only if priced here.",
    )
    metrics: bool = Field(
        True, description="Serve Prometheus metrics at `GET /metrics` (needs `auth_token` if set)."
    )
    models: dict[str, ModelLimits] = Field(
        default_factory=dict,
        description="By upstream model (globs as in `routes`): `[models.\"qwen3-coder\"]` with "
        "`context_window` and `max_output_tokens` (also on a route). Used to lower `max_tokens`, "
        "in `prompt is too long` errors and by `code` to tell Claude Code when to compact; "
        "unset: the genai-prices table's window, if it knows the model.",
    )

    _provider = field_validator("provider")(_known_provider)
    _url = field_validator("openai_base_url")(_base_url)
    _auth = field_validator("openai_api_key")(_one_authorization)

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

    def fingerprint(self) -> str:
        """Equal for two settings that answer every request alike, whatever address they listen
        on, how they log or record, and which token they ask for: how `code` tells that a
        running `serve` is this configuration's (`GET /` shows it). One-way, keys included, so
        a changed key is a changed configuration and the digest gives no key away."""
        data = self.model_dump(mode="json", exclude=set(_NOT_FINGERPRINTED))
        keys = [e.api_key.get_secret_value() for e in self.endpoints().values() if e.api_key]
        text = json.dumps([data, keys], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def rules(self) -> list[Rule]:
        return [
            Rule(
                r.pattern,
                r.model,
                r.upstream,
                r.thinking,
                r.min_input_tokens,
                r.images,
                r.request_class,
            )
            for r in self.routes
        ]

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
        data["openai_base_url"] = masked_url(self.openai_base_url)
        for name, upstream in self.upstreams.items():
            data["upstreams"][name]["api_key"] = _masked(upstream.api_key)
            data["upstreams"][name]["base_url"] = masked_url(upstream.base_url)
        return data

    def secrets(self) -> list[str]:
        """Every secret these settings hold: the upstream keys (named upstreams' too), the
        client token, the passwords in base URLs. What logs and journals scrub."""
        found: list[str] = []
        for endpoint in self.endpoints().values():
            if endpoint.api_key is not None:
                found.append(endpoint.api_key.get_secret_value())
            password = url_password(endpoint.base_url)
            if password:
                # As written in the URL, and as sent (percent-decoded), when they differ.
                found += [password, urlsplit(endpoint.base_url).password or ""]
        if self.auth_token is not None:
            found.append(self.auth_token.get_secret_value())
        return [secret for secret in dict.fromkeys(found) if secret]


_NOT_FINGERPRINTED = (
    "host",
    "port",
    "auth_token",
    "allowed_hosts",
    "allowed_origins",
    "max_client_connections",
    "log_level",
    "record",
    "record_dir",
    "record_full",
    "record_redact",
    "metrics",
)


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
    """The KEY=VALUE pairs of a `.env` file, parsed by python-dotenv (quotes, comments,
    `export`, escapes, `${VAR}`), without putting them into the environment."""
    if not path.is_file():
        return {}
    try:
        values = dotenv_values(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return {key: value for key, value in values.items() if value is not None}


def _from_env(env: Mapping[str, str], where: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """The settings `env` sets, and for each the variable it came from (for error messages)."""
    found: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in Settings.model_fields:
        if name in TOML_ONLY:
            continue
        for key in (f"{ENV_PREFIX}{name.upper()}", LEGACY_ENV.get(name)):
            if key and env.get(key, "") != "":
                found[name] = env[key]
                origins[name] = f"{key}{where}"
                break
    return found, origins


def _read_config(path: Path, explicit: bool) -> dict[str, Any]:
    """The config file's settings; nothing when the default file does not exist."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such config file")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None


def _resolve_key_envs(
    merged: dict[str, Any], lookup: Mapping[str, str], required: bool = True
) -> None:
    """Named upstreams' `api_key_env` read into their `api_key`, before validation, so the
    key is validated (and refused next to a URL password) like one written in the file.
    Not `required`: a variable that is not set leaves the key unset."""
    upstreams = merged.get("upstreams")
    if not isinstance(upstreams, dict):
        return
    resolved = dict(upstreams)
    for name, upstream in upstreams.items():
        if not isinstance(upstream, dict) or upstream.get("api_key") is not None:
            continue
        variable = upstream.get("api_key_env")
        if isinstance(variable, str) and variable:
            if not lookup.get(variable):
                if not required:
                    continue
                raise ConfigError(f"setting upstreams.{name}.api_key_env: {variable} is not set")
            resolved[name] = {**upstream, "api_key": lookup[variable]}
    merged["upstreams"] = resolved


def _unknown(loc: list[str]) -> str:
    """A key no setting has, with the one it is closest to: a typo in the config file."""
    model: type[BaseModel] | None = Settings if len(loc) == 1 else None
    if len(loc) == 3 and loc[0] == "upstreams":
        model = UpstreamSettings
    elif len(loc) == 3 and loc[0] == "routes":
        model = RouteRule
    elif len(loc) == 3 and loc[0] == "models":
        model = ModelLimits
    close = difflib.get_close_matches(loc[-1], list(model.model_fields) if model else [], n=1)
    return "no such setting" + (f"; did you mean {close[0]!r}?" if close else "")


def _one_line(exc: ValidationError, origins: Mapping[str, str]) -> str:
    """The first error as `setting NAME: what is wrong (where it was set)`."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = _unknown(loc)
    origin = origins.get(loc[0]) if loc else None
    where = f" (from {origin})" if origin else ""
    return f"setting{' ' if loc else ''}{'.'.join(loc)}: {message}{where}"


def load_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_path: Path | None = Path(".env"),
    keys: bool = True,
    sources: dict[str, str] | None = None,
) -> Settings:
    """Every layer merged and validated; any problem is a `ConfigError` of one line naming the
    setting, where it was set and what is wrong. Without `keys` (no upstream will be called:
    `--upstream-replay`), an `api_key_env` that is not set is no error. `sources`, when
    given, gets where each setting not left at its default came from (`config show`)."""
    env = os.environ if env is None else env
    path = config_path or default_config_path(env)
    from_file = _read_config(path, explicit=config_path is not None)
    dotenv = read_dotenv(dotenv_path) if dotenv_path is not None else {}
    from_dotenv, dotenv_origins = _from_env(dotenv, f" in {dotenv_path}")
    from_environ, environ_origins = _from_env(env)
    from_flags = {k: v for k, v in (flags or {}).items() if v is not None}
    merged: dict[str, Any] = {**from_file, **from_dotenv, **from_environ, **from_flags}
    origins = {
        **{name: str(path) for name in from_file},
        **dotenv_origins,
        **environ_origins,
        **{name: f"--{name.replace('_', '-')}" for name in from_flags},
    }
    _resolve_key_envs(merged, {**dotenv, **{k: v for k, v in env.items() if v}}, keys)
    if sources is not None:
        sources.update(origins)
        sources.update({name: f"{key} (environment)" for name, key in environ_origins.items()})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, origins)) from None


_STARTER_TABLES = """\
# More upstreams by name, their keys in the environment (or .env):
# [upstreams.local]
# base_url = "http://127.0.0.1:8080/v1"
# api_key_env = "LOCAL_API_KEY"

# Ordered rules on the client's model name, tried before big_model / small_model:
# [[routes]]
# pattern = "claude-haiku-*"
# model = "qwen3-coder-small"
# upstream = "local"
"""
_NEVER_WRITTEN = ("openai_api_key", "auth_token")


def config_template(settings: Settings) -> str:
    """TOML for `config init`: a commented starter file. Every setting is there with what it
    means, commented out at its default, except those `settings` set otherwise (from the
    environment, `.env` or an existing file), which are written. Secrets never are."""
    data = settings.model_dump(
        mode="json",
        exclude={"upstreams": {"__all__": {"api_key"}}, **dict.fromkeys(_NEVER_WRITTEN, True)},
    )
    data["openai_base_url"] = without_credentials(settings.openai_base_url)
    lines = [
        "# claude-bridge configuration. Environment variables, .env and flags override it;",
        "# `claude-bridge config show` prints what is in effect and where each value came from.",
        "# Keep keys in the environment (OPENAI_API_KEY, api_key_env), not in this file.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        if name in TOML_ONLY or name in _NEVER_WRITTEN:
            continue
        lines += textwrap.wrap(
            field.description or "",
            96,
            initial_indent="# ",
            subsequent_indent="# ",
            break_on_hyphens=False,
        )
        default = field.get_default(call_default_factory=True)
        value = data.get(name)
        if value is None:
            lines.append(f"# {name} =")
        else:
            toml = tomli_w.dumps({name: value}).strip()
            lines.append(toml if value != default else f"# {toml}")
        lines.append("")
    tables = {name: data[name] for name in TOML_ONLY if data.get(name)}
    for upstream in tables.get("upstreams", {}).values():
        upstream["base_url"] = without_credentials(upstream["base_url"])
    # TOML has no null: what is unset is left out.
    entries = [*tables.get("upstreams", {}).values(), *tables.get("prices", {}).values()]
    entries += [*tables.get("models", {}).values(), *tables.get("routes", [])]
    for entry in entries:
        for unset in [k for k, v in entry.items() if v is None]:
            del entry[unset]
    return "\n".join(lines) + "\n" + (tomli_w.dumps(tables) if tables else _STARTER_TABLES)


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
