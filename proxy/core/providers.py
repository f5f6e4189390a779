"""Provider profiles: what each OpenAI-compatible upstream needs beyond the generic translation
(PROTOCOL.md 7, 8.1).

A `Profile` holds its rules as data; `request.py` applies them. The edge picks one per request
with `resolve(provider, base_url, model)`: the configured name when there is one, else the base
URL's host (and, for local servers, their default port), then traits that follow the model
wherever it is served (Mistral models' chat templates want 9-character tool ids).

Regexes in profiles are matched with `re.search`, case-insensitively, against the upstream model
name; an empty pattern matches nothing (`""` in `effort_models` means "every model", see there).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

ReasoningStyle = Literal["effort", "openrouter", "deepseek", "none"]
"""How thinking is asked for: `reasoning_effort`; OpenRouter's `reasoning` object; DeepSeek's
`thinking: {type}` switch; not at all."""
Passback = Literal["reasoning_details", "reasoning_content", "none"]
"""How an assistant turn's thinking goes back upstream on later requests."""
AuthHeader = Literal["authorization", "api-key"]
Carrier = Literal["extra_content", "reasoning_details"]
"""Thought signatures carried in tool ids, and where they go back: Gemini's
`tool_calls[].extra_content`, OpenRouter's `reasoning_details` of type `reasoning.encrypted`."""

OPENAI_REASONING_MODELS = r"^(o\d|gpt-5)"
AZURE_API_VERSION = "2025-04-01-preview"
"""For deployment URLs without an `api-version`: the first with `reasoning_effort` and
`max_completion_tokens` for o3/o4-mini and gpt-5."""


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    hosts: tuple[str, ...] = ()
    """Host names this profile is detected from; a leading dot matches any subdomain."""
    ports: tuple[int, ...] = ()
    """Default ports of local servers, tried when no host matched (a guess: set `provider`)."""
    auth_header: AuthHeader = "authorization"
    """`authorization: Bearer <key>`, or Azure's `api-key: <key>`."""
    base_paths: tuple[str, ...] = ()
    """What the path of a working base URL ends with (the first is the usual one), for the
    start-up diagnostics (`proxy/diagnose.py`); empty: any path works."""
    picks_model: bool = True
    """Whether the server picks the model by the request's name (llama-server answers with the
    model it loaded, whatever the name): if so, Claude's names need mapping."""

    # -- request fields
    max_tokens_field: str = "max_tokens"
    reasoning_models: str = ""
    """OpenAI-style reasoning models: they get `reasoning_max_tokens_field` and lose
    `reasoning_drops` (rejected: "Only the default (1) value is supported")."""
    reasoning_max_tokens_field: str = "max_completion_tokens"
    reasoning_drops: tuple[str, ...] = ("temperature", "top_p", "stop")
    body_fields: tuple[str, ...] | None = None
    """Top-level fields the server accepts, for servers that reject any other (None: any)."""
    top_k: bool = False
    """Forward Anthropic's `top_k` (an extension some servers accept)."""

    # -- thinking
    reasoning: ReasoningStyle = "effort"
    effort_models: str = ""
    """Models that accept `reasoning_effort` (others reject it); empty: every model."""
    effort_values: tuple[str, ...] = ("low", "medium", "high")
    """Accepted `reasoning_effort` values, lowest first; others map to the nearest."""
    thinking_kwargs: bool = False
    """Also send `chat_template_kwargs.enable_thinking` (vLLM, llama.cpp: Qwen3-style templates)."""
    passback: Passback = "none"
    passback_every_turn: bool = False
    """With `reasoning_content` pass-back: on every assistant message, `""` when it had no
    thinking (DeepSeek 400s when a tool-call turn lacks it). Otherwise only on messages that
    made tool calls and had thinking (what gpt-oss and Qwen3 templates render)."""
    signed_reasoning_models: str = ""
    """With `reasoning_details` pass-back: models whose reasoning goes back only with the
    upstream's own signature (Claude rejects unsigned thinking; Gemini's signatures travel
    apart, in tool ids), so thinking the proxy signed is not sent to them."""
    carriers: tuple[Carrier, ...] = ()
    """Thought signatures restored from tool ids into the request."""

    # -- shapes
    tool_id_max: int | None = None
    """Longest tool-call id the server accepts (OpenAI: 40); longer ids are hashed to fit."""
    tool_id_alnum: int | None = None
    """Exact length of an all-alphanumeric tool-call id (Mistral: 9); others are hashed to it."""
    schema: Literal["", "gemini"] = ""
    """Tool and response-format JSON Schema dialect: "" sends schemas unchanged."""
    cache_control_models: str = ""
    """Models whose `cache_control` marks are forwarded on content parts (OpenRouter)."""
    strict_strings: bool = False
    """Text-only contents as plain strings and never `content: null` (strict chat templates)."""
    prompt_cache_key: bool = False
    """Send the client's session as `prompt_cache_key` (OpenAI): the turns of one conversation
    then land where its prompt prefix is cached."""

    def is_reasoning_model(self, model: str) -> bool:
        return _search(self.reasoning_models, model)

    def takes_effort(self, model: str) -> bool:
        return not self.effort_models or _search(self.effort_models, model)

    def effort(self, wanted: str) -> str:
        """The accepted effort nearest to `wanted`, rounding up on ties."""
        if wanted in self.effort_values or not self.effort_values:
            return wanted
        rank = _EFFORT_RANK.get(wanted, _EFFORT_RANK["medium"])
        return min(
            self.effort_values, key=lambda v: (abs(_EFFORT_RANK[v] - rank), -_EFFORT_RANK[v])
        )

    def forwards_cache_control(self, model: str) -> bool:
        return _search(self.cache_control_models, model)

    def needs_signed_reasoning(self, model: str) -> bool:
        return _search(self.signed_reasoning_models, model)


_EFFORT_RANK = {"none": 0, "minimal": 1, "low": 2, "medium": 3, "high": 4, "xhigh": 5, "max": 6}


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _search(pattern: str, model: str) -> bool:
    return bool(pattern) and _compiled(pattern).search(model) is not None


GENERIC = Profile(name="generic", label="Any OpenAI-compatible server", carriers=("extra_content",))

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        GENERIC,
        Profile(
            name="openai",
            label="OpenAI",
            hosts=("api.openai.com",),
            base_paths=("/v1",),
            max_tokens_field="max_completion_tokens",
            reasoning_models=OPENAI_REASONING_MODELS,
            effort_models=OPENAI_REASONING_MODELS,
            tool_id_max=40,
            prompt_cache_key=True,
        ),
        Profile(
            name="azure",
            label="Azure OpenAI",
            hosts=(
                ".openai.azure.com",
                ".cognitiveservices.azure.com",
                ".services.ai.azure.com",
            ),
            auth_header="api-key",
            reasoning_models=OPENAI_REASONING_MODELS,
            effort_models=OPENAI_REASONING_MODELS,
            tool_id_max=40,
        ),
        Profile(
            name="openrouter",
            label="OpenRouter",
            hosts=("openrouter.ai",),
            base_paths=("/api/v1",),
            reasoning="openrouter",
            effort_values=("minimal", "low", "medium", "high", "xhigh"),
            passback="reasoning_details",
            signed_reasoning_models=r"^(anthropic|google)/",
            carriers=("reasoning_details",),
            tool_id_max=64,
            cache_control_models=r"^(anthropic|google)/",
            top_k=True,
        ),
        Profile(
            name="deepseek",
            label="DeepSeek",
            hosts=("api.deepseek.com",),
            reasoning="deepseek",
            passback="reasoning_content",
            passback_every_turn=True,
        ),
        Profile(
            name="gemini",
            label="Gemini (OpenAI compatibility)",
            hosts=("generativelanguage.googleapis.com", "aiplatform.googleapis.com"),
            # AI Studio's `/v1beta/openai`, Vertex AI's `.../endpoints/openapi`.
            base_paths=("/v1beta/openai", "/openai", "/openapi"),
            carriers=("extra_content",),
            schema="gemini",
        ),
        Profile(
            name="groq",
            label="Groq",
            hosts=("api.groq.com",),
            base_paths=("/openai/v1",),
            effort_models=r"gpt-oss",
            strict_strings=True,
        ),
        Profile(
            name="xai",
            label="xAI",
            hosts=("api.x.ai",),
            base_paths=("/v1",),
            reasoning_models=r"^grok-(4|3-mini|code)",
            reasoning_max_tokens_field="max_tokens",
            reasoning_drops=("stop",),
            effort_models=r"^grok-3-mini",
            effort_values=("low", "high"),
        ),
        Profile(
            name="mistral",
            label="Mistral",
            hosts=("api.mistral.ai", "codestral.mistral.ai"),
            base_paths=("/v1",),
            reasoning="none",
            tool_id_alnum=9,
            body_fields=(
                "model",
                "messages",
                "max_tokens",
                "temperature",
                "top_p",
                "stream",
                "stop",
                "random_seed",
                "response_format",
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "presence_penalty",
                "frequency_penalty",
                "n",
                "prediction",
                "prompt_mode",
                "safe_prompt",
            ),
        ),
        Profile(
            name="vllm",
            label="vLLM",
            ports=(8000,),
            base_paths=("/v1",),
            thinking_kwargs=True,
            passback="reasoning_content",
            top_k=True,
        ),
        Profile(
            name="llamacpp",
            label="llama.cpp server / llama-cpp-python",
            ports=(8080,),
            picks_model=False,
            thinking_kwargs=True,
            passback="reasoning_content",
            top_k=True,
            strict_strings=True,
        ),
        Profile(
            name="ollama",
            label="Ollama",
            hosts=("ollama.com",),
            ports=(11434,),
            base_paths=("/v1",),
            strict_strings=True,
        ),
        Profile(
            name="lmstudio",
            label="LM Studio",
            ports=(1234,),
            base_paths=("/v1",),
            strict_strings=True,
        ),
    )
}

# Mistral models' chat templates (and mistral_common) accept only 9-character alphanumeric
# tool-call ids, wherever the model runs: "Tool call id was call_0fypS1hVX but must be a-z,
# A-Z, 0-9, with a length of 9".
_MISTRAL_MODELS = re.compile(
    r"(^|[/:])(open-)?(mistral|mixtral|codestral|magistral|devstral|ministral|pixtral)",
    re.IGNORECASE,
)


def by_name(name: str) -> Profile:
    """The profile called `name` (as in `provider = "..."`); ValueError names the choices."""
    return named(PROFILES, name, "provider")


N = TypeVar("N")


def named(table: Mapping[str, N], name: str, kind: str) -> N:
    """The entry of `table` called `name`, whatever its case and spaces; ValueError says
    which `kind` of name is unknown and names the choices."""
    found = table.get(name.strip().lower())
    if found is None:
        raise ValueError(f"unknown {kind} {name!r}: choose one of {', '.join(table)}")
    return found


def host_of(base_url: str) -> str:
    """The host (with port) of a base URL, without scheme, credentials, path or query."""
    rest = base_url.split("://", 1)[-1]
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    return rest.rsplit("@", 1)[-1].lower()


def _split_port(host: str) -> tuple[str, int | None]:
    name, port = host, None
    if host.startswith("["):  # [::1]:8000
        name, _, tail = host[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        name, _, port_text = host.partition(":")
    if port_text.isdigit():
        port = int(port_text)
    return name.rstrip("."), port


def detect(host: str, model: str = "") -> Profile:
    """The profile for an upstream at `host` (a host name, `host:port`, or a base URL) serving
    `model`: known hosts first, then local servers' default ports, else the generic profile."""
    return with_model_traits(locate(PROFILES.values(), host) or GENERIC, model)


class Located(Protocol):
    @property
    def hosts(self) -> tuple[str, ...]: ...
    @property
    def ports(self) -> tuple[int, ...]: ...


L = TypeVar("L", bound=Located)


def locate(candidates: Iterable[L], host: str) -> L | None:
    """The candidate for an upstream at `host` (a host name, `host:port`, or a base URL): the
    first whose `hosts` match, else the first whose `ports` hold a local server's port."""
    name, port = _split_port(host_of(host))
    found = list(candidates)
    by_host = next((c for c in found for h in c.hosts if _host_matches(name, h)), None)
    if by_host is not None or port is None:
        return by_host
    return next((c for c in found if port in c.ports), None)


def _host_matches(name: str, pattern: str) -> bool:
    if pattern.startswith("."):
        return name.endswith(pattern) or name == pattern[1:]
    return name == pattern or name.endswith("." + pattern)


def with_model_traits(profile: Profile, model: str) -> Profile:
    """Rules that follow the model rather than the server."""
    if profile.tool_id_alnum is None and _MISTRAL_MODELS.search(model):
        return dataclasses.replace(profile, tool_id_alnum=9)
    return profile


@functools.lru_cache(maxsize=256)
def resolve(provider: str | None, base_url: str, model: str) -> Profile:
    """The profile for one request: `provider` when configured, else detected from the URL.
    A name that is no translation profile is a pass-through upstream's (`kimi`, `strict`...:
    the settings checked it against the mode), whose translation rules never apply."""
    if provider and provider.strip().lower() in PROFILES:
        return with_model_traits(by_name(provider), model)
    return detect(base_url, model)


def coerce(value: Profile | str | dict[str, Any] | None) -> Profile:
    """A profile from what a recording kept: the object, its name, or its fields."""
    if value is None:
        return GENERIC
    if isinstance(value, Profile):
        return value
    if isinstance(value, str):
        return by_name(value)
    known = {f.name for f in dataclasses.fields(Profile)}
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in value.items() if k in known
    }
    return Profile(**fields)


# -- the edge's part: URL and headers ---------------------------------------------------


def chat_completions_url(base_url: str, profile: Profile, api_version: str | None = None) -> str:
    """`<base>/chat/completions`, keeping the base URL's query. Azure deployment URLs
    (`…/openai/deployments/<name>`) need an `api-version`; the v1 surface (`…/openai/v1`) not."""
    base, _, query = base_url.partition("?")
    url = base.rstrip("/") + "/chat/completions"
    params = [p for p in query.split("&") if p]
    if (
        profile.name == "azure"
        and "/openai/deployments/" in base
        and not any(p.startswith("api-version=") for p in params)
    ):
        params.append(f"api-version={api_version or AZURE_API_VERSION}")
    return url + ("?" + "&".join(params) if params else "")


def auth_headers(profile: Profile, api_key: str | None) -> dict[str, str]:
    if not api_key:
        return {}
    if profile.auth_header == "api-key":
        return {"api-key": api_key}
    return {"authorization": f"Bearer {api_key}"}


def messages_url(base_url: str) -> str:
    """Anthropic's `/v1/messages` under a pass-through upstream's base URL, which may or may
    not end in `/v1` (`http://localhost:8080`, `https://openrouter.ai/api/v1`,
    `https://api.deepseek.com/anthropic`); the query is kept."""
    base, sep, query = base_url.partition("?")
    base = base.rstrip("/")
    path = "/messages" if base.endswith("/v1") else "/v1/messages"
    return base + path + sep + query


def anthropic_headers(host: str, api_key: str | None) -> dict[str, str]:
    """Auth for a pass-through upstream: `x-api-key`, and the same key as a Bearer token for
    the servers that read only that (llama.cpp's `--api-key`, OpenRouter, DeepSeek); Anthropic
    itself takes `x-api-key` alone."""
    if not api_key:
        return {}
    headers = {"x-api-key": api_key}
    if not _host_matches(_split_port(host)[0], "anthropic.com"):
        headers["authorization"] = f"Bearer {api_key}"
    return headers
