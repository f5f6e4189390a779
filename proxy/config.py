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
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .core import dialects, passthrough_profiles, providers
from .core.routing import DEFAULT_UPSTREAM, Rule, parse_chain, parse_target

ENV_PREFIX = "CLAUDE_BRIDGE_"
LEGACY_ENV = {
    "openai_base_url": "OPENAI_BASE_URL",
    "openai_api_key": "OPENAI_API_KEY",
    "big_model": "BIG_MODEL",
    "small_model": "SMALL_MODEL",
}


Mode = str
"""How an upstream is spoken to: a dialect's name (`core.dialects.MODES`), or `auto`."""
TOML_ONLY = ("routes", "upstreams", "prices", "models", "web_search")
LogLevel = Literal["debug", "info", "warning", "error"]
MAX_SECONDS = 1_000_000.0
"""The longest timeout or interval (11.6 days, as good as none): longer ones, `inf` above all,
overflow the event loop's timers, a traceback on every request."""


def _known_mode(value: str) -> str:
    if value != dialects.AUTO:
        dialects.by_name(value)  # its ValueError lists the known names
    return value


def _known_provider(value: str | None) -> str | None:
    if value and value.strip().lower() not in passthrough_profiles.PROFILES:
        providers.by_name(value)  # its ValueError lists the known names
    return value


def _provider_fits_mode(provider: str | None, mode: str) -> None:
    """Pass-through upstreams take the pass-through profiles (`kimi`, `zai`...), translated
    ones the translation profiles; the ValueError lists the right ones."""
    if provider and mode == "anthropic":
        passthrough_profiles.by_name(provider)
    elif provider:
        providers.by_name(provider)


def _field_paths(value: list[str] | None) -> list[str] | None:
    for path in value or ():
        passthrough_profiles.parse_path(path)  # its ValueError shows the syntax
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
    fallbacks: list[str] = Field(default_factory=list)
    """Targets (`upstream:model`, or a model on this rule's upstream) tried in order when the
    rule's own fails; `model = ["a", "up:b"]` sets `model` and these at once."""


class PoolKey(BaseModel):
    """One key of an upstream's pool (`api_keys`): the key, or `{key, weight}`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    key: SecretStr
    weight: float = Field(default=1.0, gt=0, le=MAX_SECONDS)
    """Its share of the requests, against the pool's other healthy keys."""
    env: str | None = None
    """The variable it was read from (`api_keys_env`): how the dashboard names it."""

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return {"key": value} if isinstance(value, str) else value


class PoolKeyEnv(BaseModel):
    """One entry of `api_keys_env`: a variable name, or `{env, weight}`."""

    model_config = ConfigDict(extra="forbid")
    env: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0, le=MAX_SECONDS)

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return {"env": value} if isinstance(value, str) else value


class UpstreamSettings(BaseModel):
    """One named upstream (`[upstreams.<name>]` in the config file)."""

    # Errors never echo a value: it may be a key, or a URL with a password.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    """The environment variable (or `.env` entry) holding the key: keeps it out of the file."""
    provider: str | None = None
    mode: Mode = dialects.AUTO
    azure_api_version: str | None = None
    api_keys: list[PoolKey] = Field(default_factory=list)
    """Several keys, used in turn (proxy/resilience/keys.py): `["sk-1", {key = "sk-2",
    weight = 2}]`; instead of `api_key`."""
    api_keys_env: list[PoolKeyEnv] = Field(default_factory=list)
    """The variables holding them: `["KEY_1", {env = "KEY_2", weight = 2}]`."""
    drop_fields: list[str] | None = None
    """Pass-through: body fields never sent to it; unset: the top-level `drop_fields`."""
    drop_betas: list[str] | None = None
    """Pass-through: `anthropic-beta` values never sent; unset: the top-level `drop_betas`."""

    _provider = field_validator("provider")(_known_provider)
    _mode = field_validator("mode")(_known_mode)
    _url = field_validator("base_url")(_base_url)
    _auth = field_validator("api_key")(_one_authorization)
    _drop_fields = field_validator("drop_fields")(_field_paths)

    @model_validator(mode="after")
    def _provider_for_mode(self) -> UpstreamSettings:
        _provider_fits_mode(self.provider, self.mode)
        return self

    def passthrough_profile(self) -> passthrough_profiles.PassthroughProfile:
        """What a pass-through upstream is spared: its profile's rules and the drops set."""
        return passthrough_profiles.resolve(
            self.provider,
            self.base_url,
            tuple(self.drop_fields or ()),
            tuple(self.drop_betas or ()),
        )

    @model_validator(mode="after")
    def _one_kind_of_key(self) -> UpstreamSettings:
        if self.api_keys and self.api_key is not None:
            raise ValueError("set api_key (or api_key_env) or api_keys (or api_keys_env), not both")
        if self.api_keys and _userinfo(self.base_url):
            raise ValueError(
                "the base URL has `user:password@` (sent as HTTP Basic auth) and api_keys are "
                "set too; both would be the Authorization header: keep one"
            )
        return self

    def pool(self) -> list[PoolKey]:
        """Every key this upstream may be called with, in order (one, or none)."""
        if self.api_keys:
            return self.api_keys
        return [PoolKey(key=self.api_key, env=self.api_key_env)] if self.api_key else []


SearchBackend = Literal["searxng", "brave", "tavily", "exa", "upstream"]


class WebSearchSettings(BaseModel):
    """Who runs the searches of Anthropic's `web_search` server tool (`[web_search]`)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    backend: SearchBackend
    """`searxng` (a SearXNG instance's JSON API at `url`), `brave`, `tavily`, `exa` (a key in
    `api_key_env`), or `upstream`: the provider's own search (OpenRouter, OpenAI Responses)."""
    url: str | None = None
    """The search API to call: required for `searxng`; for the others, unset means the
    provider's public endpoint. The only address a search ever goes to."""
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    max_results: int = Field(5, ge=1, le=20)
    """Results per search given to the model and the client."""
    timeout: float = Field(15.0, gt=0, le=MAX_SECONDS)
    """Seconds one search may take before it is an `unavailable` result."""

    _url = field_validator("url")(_base_url)

    @model_validator(mode="after")
    def _complete(self) -> WebSearchSettings:
        if self.backend == "searxng" and not self.url:
            raise ValueError("backend searxng needs `url`, the instance's address")
        if self.backend in ("brave", "tavily", "exa") and not (self.api_key or self.api_key_env):
            raise ValueError(f"backend {self.backend} needs its key: set `api_key_env`")
        return self


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
        description="Upstream's rules profile (openai, openrouter, deepseek, gemini, azure, ...; "
        'with `mode = "anthropic"`: deepseek, kimi, zai, minimax, openrouter, vllm, '
        "llamacpp, ollama, strict); unset: detected from the base URL.",
    )
    azure_api_version: str | None = Field(
        None, description="`api-version` for Azure deployment URLs (unset: a recent GA version)."
    )
    big_model: str | None = Field(
        None,
        description="Upstream model for opus/sonnet (and unmatched) names; unset: as asked. "
        "`upstream:model` names a declared upstream's; a list (TOML) or commas "
        '(environment) make a fallback chain: `["openrouter:deepseek/deepseek-chat", '
        '"groq:llama-3.3-70b"]`.',
    )
    big_model_fallbacks: list[str] = Field(
        default_factory=list,
        description="Targets tried in order when `big_model` fails (a list `big_model` sets it).",
    )
    small_model: str | None = Field(
        None, description="Upstream model for haiku names; a target or a chain, as `big_model`."
    )
    small_model_fallbacks: list[str] = Field(
        default_factory=list, description="Targets tried in order when `small_model` fails."
    )
    mode: Mode = Field(
        dialects.AUTO,
        description="`openai`: translate to Chat Completions; `responses`: translate to the "
        "Responses API (`/v1/responses`); `anthropic`: pass requests through to the upstream's "
        "own `/v1/messages` (llama.cpp, vLLM, Ollama, OpenRouter...); `auto`: Responses for "
        "the OpenAI models served only there, else Chat Completions.",
    )
    upstreams: dict[str, UpstreamSettings] = Field(
        default_factory=dict,
        description="More upstreams by name: `[upstreams.NAME]` with `base_url`, `api_key_env` "
        "(or `api_key`), `provider`, `mode`, `azure_api_version`, `drop_fields`, `drop_betas`; "
        'a key pool as `api_keys_env = ["K1", {env = "K2", weight = 2}]` (or `api_keys`).',
    )
    routes: list[RouteRule] = Field(
        default_factory=list,
        description="Ordered `{pattern, model, upstream}` rules (globs on the client model) "
        "tried first; no `upstream`: the default one; no `model`: the client's name. A rule "
        "may also ask `thinking`, `min_input_tokens`, `images`, `request_class` (`subagent`, "
        "`compaction`, `auxiliary`, `workflow`, `main`) of the request. `model` may be a "
        'fallback chain: `["qwen3", "groq:llama-3.1-8b-instant"]`.',
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
    workers: int | Literal["auto"] = Field(
        1,
        description="Processes serving the port (`serve --workers`): a number, or `auto` for one "
        "per CPU core; one dashboard, journal files and metrics for all of them.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _some_workers(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("a number of processes, or auto (one per CPU core)")
        try:
            count = int(value)
        except ValueError:
            raise ValueError("a number of processes, or auto (one per CPU core)") from None
        if count < 1:
            raise ValueError("must be at least 1, or auto (one per CPU core)")
        return count

    def worker_count(self) -> int:
        """How many processes `serve` runs (`workers`, with `auto` resolved)."""
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)

    models: dict[str, ModelLimits] = Field(
        default_factory=dict,
        description='By upstream model (globs as in `routes`): `[models."qwen3-coder"]` with '
        "`context_window` and `max_output_tokens` (also on a route). Used to lower `max_tokens`, "
        "in `prompt is too long` errors and by `code` to tell Claude Code when to compact; "
        "unset: the genai-prices table's window, if it knows the model.",
    )
    web_search: WebSearchSettings | None = Field(
        None,
        description="Who runs Anthropic's `web_search` tool for translated upstreams: "
        "`[web_search]` with `backend` (`searxng` + `url`, `brave`, `tavily`, `exa` + "
        "`api_key_env`, or `upstream`: the provider's own search), `max_results`, `timeout`. "
        "Unset: such requests are told what to configure.",
    )
    drop_fields: list[str] = Field(
        default_factory=list,
        description='Pass-through (`mode = "anthropic"`): body fields never sent upstream, '
        "on top of the provider profile's: `context_management`, `output_config.effort`, "
        "`tools[].defer_loading` (comma-separated in the environment); an upstream's own "
        "`drop_fields` replaces this list.",
    )
    drop_betas: list[str] = Field(
        default_factory=list,
        description="Pass-through: `anthropic-beta` values never sent upstream, names or globs "
        "(`advanced-tool-use-*`); an upstream's own `drop_betas` replaces this list.",
    )

    _provider = field_validator("provider")(_known_provider)
    _mode = field_validator("mode")(_known_mode)
    _url = field_validator("openai_base_url")(_base_url)
    _auth = field_validator("openai_api_key")(_one_authorization)
    _drop_fields = field_validator("drop_fields")(_field_paths)

    @model_validator(mode="after")
    def _provider_for_mode(self) -> Settings:
        _provider_fits_mode(self.provider, self.mode)
        return self

    @model_validator(mode="before")
    @classmethod
    def _chains(cls, data: Any) -> Any:
        """Chains written as lists (`big_model = ["a", "b"]`, a rule's `model`) become their
        first target and its fallbacks, so everything that reads one model still does."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("big_model", "small_model"):
            first, rest = _split_chain(data.get(name))
            if rest:
                data[name] = first
                data[f"{name}_fallbacks"] = [*rest, *_listed(data.get(f"{name}_fallbacks"))]
        upstreams = data.get("upstreams")
        names = list(upstreams) if isinstance(upstreams, dict) else []
        routes = data.get("routes")
        if isinstance(routes, list):
            data["routes"] = [_chained_rule(rule, names) for rule in routes]
        return data

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
        for name in ("big_model", "small_model"):
            if getattr(self, f"{name}_fallbacks") and not getattr(self, name):
                raise ValueError(f"{name}_fallbacks: set {name}, the target they stand in for")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "record_redact",
        "allowed_hosts",
        "allowed_origins",
        "big_model_fallbacks",
        "small_model_fallbacks",
        "drop_fields",
        "drop_betas",
        mode="before",
    )
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
        keys = [k.key.get_secret_value() for e in self.endpoints().values() for k in e.pool()]
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
                parse_chain(r.fallbacks, self.upstreams.keys(), r.upstream),
            )
            for r in self.routes
        ]

    def big_chain(self) -> list[str]:
        """`big_model` and its fallbacks, as `routing.route` takes them."""
        return [self.big_model, *self.big_model_fallbacks] if self.big_model else []

    def small_chain(self) -> list[str]:
        """`small_model` and its fallbacks, as `routing.route` takes them."""
        return [self.small_model, *self.small_model_fallbacks] if self.small_model else []

    def endpoints(self) -> dict[str, UpstreamSettings]:
        """Every upstream by name: the top-level one as `default`, then the declared ones."""
        default = UpstreamSettings(
            base_url=self.openai_base_url,
            api_key=self.openai_api_key,
            provider=self.provider,
            mode=self.mode,
            azure_api_version=self.azure_api_version,
            drop_fields=self.drop_fields,
            drop_betas=self.drop_betas,
        )
        # A named upstream without its own drops has the top-level ones.
        named = {
            name: u.model_copy(
                update={
                    "drop_fields": self.drop_fields if u.drop_fields is None else u.drop_fields,
                    "drop_betas": self.drop_betas if u.drop_betas is None else u.drop_betas,
                }
            )
            for name, u in self.upstreams.items()
        }
        return {DEFAULT_UPSTREAM: default, **named}

    def public(self) -> dict[str, Any]:
        """The settings with secrets masked: for `config show`, logs and the dashboard."""
        data = self.model_dump(mode="json")
        for name in ("openai_api_key", "auth_token"):
            data[name] = _masked(getattr(self, name))
        data["openai_base_url"] = masked_url(self.openai_base_url)
        for name, upstream in self.upstreams.items():
            data["upstreams"][name]["api_key"] = _masked(upstream.api_key)
            data["upstreams"][name]["base_url"] = masked_url(upstream.base_url)
            shown_keys = data["upstreams"][name]["api_keys"]
            for shown, key in zip(shown_keys, upstream.api_keys, strict=True):
                shown["key"] = _masked(key.key)
        if self.web_search is not None:
            data["web_search"]["api_key"] = _masked(self.web_search.api_key)
        return data

    def secrets(self) -> list[str]:
        """Every secret these settings hold: the upstream keys (named upstreams' too), the
        client token, the passwords in base URLs. What logs and journals scrub."""
        found: list[str] = []
        for endpoint in self.endpoints().values():
            found += [key.key.get_secret_value() for key in endpoint.pool()]
            password = url_password(endpoint.base_url)
            if password:
                # As written in the URL, and as sent (percent-decoded), when they differ.
                found += [password, urlsplit(endpoint.base_url).password or ""]
        if self.auth_token is not None:
            found.append(self.auth_token.get_secret_value())
        if self.web_search is not None and self.web_search.api_key is not None:
            found.append(self.web_search.api_key.get_secret_value())
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
    "workers",
)


def _listed(value: Any) -> list[Any]:
    """A list setting's value as a list: commas split a string (the environment's form)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value) if isinstance(value, list) else []


def _split_chain(value: Any) -> tuple[Any, list[Any]]:
    """A target setting written as a chain -> (its first target, the others); else as is."""
    chain = _listed(value) if isinstance(value, (str, list)) else []
    return (chain[0], chain[1:]) if len(chain) > 1 else (value, [])


def _chained_rule(rule: Any, upstreams: list[str]) -> Any:
    """A `[[routes]]` rule whose `model` is a chain, or names `upstream:model`: the rule's
    own `model` and `upstream` become the first target's, its `fallbacks` the others', each
    written out whole (they were relative to the rule's upstream)."""
    if not isinstance(rule, dict) or not isinstance(rule.get("model"), (str, list)):
        return rule
    chain = [rule["model"]] if isinstance(rule["model"], str) else rule["model"]
    home = rule.get("upstream", DEFAULT_UPSTREAM)
    written = _listed(rule.get("fallbacks"))
    texts = [*chain, *written]
    if not chain or not isinstance(home, str) or not all(isinstance(t, str) and t for t in texts):
        return rule  # validation names what is wrong
    first, *rest = (parse_target(text, upstreams, home) for text in texts)
    return {
        **rule,
        "model": first.model,
        "upstream": first.upstream,
        "fallbacks": [str(target) for target in rest],
    }


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
    search = merged.get("web_search")
    if isinstance(search, dict):
        merged["web_search"] = _with_key(search, lookup, "web_search", required)
    upstreams = merged.get("upstreams")
    if not isinstance(upstreams, dict):
        return
    resolved = dict(upstreams)
    for name, upstream in upstreams.items():
        if isinstance(upstream, dict):
            resolved[name] = _with_key(upstream, lookup, f"upstreams.{name}", required)
            if upstream.get("api_keys_env") and not upstream.get("api_keys"):
                resolved[name] = _with_pool(resolved[name], lookup, f"upstreams.{name}", required)
    merged["upstreams"] = resolved


def _with_key(
    table: dict[str, Any], lookup: Mapping[str, str], where: str, required: bool
) -> dict[str, Any]:
    """`table` with the key its `api_key_env` names, if it has no `api_key` of its own."""
    variable = table.get("api_key_env")
    if table.get("api_key") is not None or not isinstance(variable, str) or not variable:
        return table
    if not lookup.get(variable):
        if not required:
            return table
        raise ConfigError(f"setting {where}.api_key_env: {variable} is not set")
    return {**table, "api_key": lookup[variable]}


def _with_pool(
    table: dict[str, Any], lookup: Mapping[str, str], where: str, required: bool
) -> dict[str, Any]:
    """`table` with the keys its `api_keys_env` names read into `api_keys`, as `_with_key`
    reads `api_key_env` (weights and variable names kept)."""
    try:
        entries = TypeAdapter(list[PoolKeyEnv]).validate_python(table["api_keys_env"])
    except ValidationError:
        return table  # validation names what is wrong
    keys = []
    for entry in entries:
        if lookup.get(entry.env):
            keys.append({"key": lookup[entry.env], "weight": entry.weight, "env": entry.env})
        elif required:
            raise ConfigError(f"setting {where}.api_keys_env: {entry.env} is not set")
    return {**table, "api_keys": keys}


def _unknown(loc: list[str]) -> str:
    """A key no setting has, with the one it is closest to: a typo in the config file."""
    model: type[BaseModel] | None = Settings if len(loc) == 1 else None
    if len(loc) == 3 and loc[0] == "upstreams":
        model = UpstreamSettings
    elif len(loc) == 3 and loc[0] == "routes":
        model = RouteRule
    elif len(loc) == 3 and loc[0] == "models":
        model = ModelLimits
    elif len(loc) == 2 and loc[0] == "web_search":
        model = WebSearchSettings
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
        exclude={
            "upstreams": {"__all__": {"api_key", "api_keys"}},
            "web_search": {"api_key"},
            **dict.fromkeys(_NEVER_WRITTEN, True),
        },
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
    entries += [tables["web_search"]] if "web_search" in tables else []
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
