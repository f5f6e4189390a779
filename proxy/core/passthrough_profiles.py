"""What each Anthropic-compatible server refuses of what Claude Code sends (`mode = "anthropic"`).

Claude Code writes its requests for Anthropic's own API: beta fields (`context_management`,
`speed`, `diagnostics`), tool search (`defer_loading`, server tools, `tool_reference`), betas in
`anthropic-beta`, combinations a server may not take. Most compatible servers ignore what they do
not know; some answer 400 to one thing or another. A `PassthroughProfile` says, as data, what one
server is spared; `passthrough.adapt` applies it. Everything a profile does not name goes as
the client sent it.

Each profile cites where its rejections were seen. Confirmed by running the pinned llama-server
(its `/v1/messages` took every field above) and by reading vLLM's and Ollama's request models;
the hosted ones from the issues that reported them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from . import providers

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+(\[\])?")


@functools.lru_cache(maxsize=256)
def parse_path(text: str) -> tuple[str, ...]:
    """`output_config.effort` -> ("output_config", "effort"); `tools[].defer_loading` names
    the field in every element of `tools`. ValueError says what is wrong."""
    segments = tuple(text.strip().split("."))
    bad = next((s for s in segments if not _SEGMENT.fullmatch(s)), None)
    if bad is not None:
        raise ValueError(
            f"{text!r} is not a field path: use dotted names, `[]` after a list "
            "(`context_management`, `output_config.effort`, `tools[].defer_loading`)"
        )
    return segments


@dataclass(frozen=True)
class Drop:
    """A field left out of the body: always, or only while another field has a value."""

    path: str
    when: tuple[str, str] | None = None
    """(`thinking.type`, `disabled`): only when the body holds that value there."""

    @property
    def segments(self) -> tuple[str, ...]:
        return parse_path(self.path)


@dataclass(frozen=True)
class PassthroughProfile:
    name: str
    label: str
    hosts: tuple[str, ...] = ()
    """Host names it is detected from (as `providers.Profile.hosts`)."""
    ports: tuple[int, ...] = ()
    """Default ports of local servers, tried when no host matched."""
    drops: tuple[Drop, ...] = ()
    betas: tuple[str, ...] = ()
    """`anthropic-beta` values left out: names, or globs (`advanced-tool-use-*`)."""
    schemaless_tools: bool = True
    """Whether tools without an `input_schema` (Anthropic's server tools: `web_search_…`,
    `tool_search_tool_…`) are sent; when not, a `tool_choice` naming one goes too."""
    billing_header: bool = True
    """Whether Claude Code's `x-anthropic-billing-header:` system block is sent."""
    system_messages: bool = True
    """Whether `role: "system"` messages in the conversation are sent as such; when not, they
    go as `user` messages."""
    seen: str = ""
    """Where the rejections were reported: for whoever revisits the entry."""

    def with_settings(
        self, fields: Iterable[str] = (), betas: Iterable[str] = ()
    ) -> PassthroughProfile:
        """This profile plus the configured `drop_fields` and `drop_betas`."""
        named = {d.path for d in self.drops if d.when is None}
        extra = tuple(Drop(f.strip()) for f in dict.fromkeys(fields) if f.strip() not in named)
        more_betas = tuple(b.strip().lower() for b in betas if b.strip())
        if not extra and not more_betas:
            return self
        return replace(self, drops=self.drops + extra, betas=self.betas + more_betas)


_THINKING_OFF = ("thinking.type", "disabled")

GENERIC = PassthroughProfile(name="generic", label="Any Anthropic-compatible server")

PROFILES: dict[str, PassthroughProfile] = {
    p.name: p
    for p in (
        GENERIC,
        PassthroughProfile(name="anthropic", label="Anthropic", hosts=("api.anthropic.com",)),
        PassthroughProfile(
            name="deepseek",
            label="DeepSeek (/anthropic)",
            hosts=("api.deepseek.com",),
            # 400 "thinking options type cannot be disabled when reasoning_effort is set":
            # Claude Code's subagents send `thinking: disabled` with an effort (2.1.166+).
            drops=(Drop("output_config.effort", when=_THINKING_OFF),),
            seen="deepseek-ai/DeepSeek-V3#1397, farion1231/cc-switch#4239",
        ),
        PassthroughProfile(
            name="kimi",
            label="Kimi / Moonshot (/anthropic, /coding)",
            hosts=("api.moonshot.ai", "api.moonshot.cn", "api.kimi.com"),
            # 400 "invalid thinking: only type=enabled is allowed for this model" for the
            # thinking-only models; the others do not think unless asked, so dropping the
            # switch changes nothing for them.
            drops=(Drop("thinking", when=_THINKING_OFF),),
            seen="MoonshotAI/Kimi-K2#141",
        ),
        PassthroughProfile(
            name="zai",
            label="Z.ai / Zhipu GLM (/api/anthropic)",
            hosts=("api.z.ai", "open.bigmodel.cn"),
            # Under the advanced-tool-use beta it defers tools sent without `defer_loading`,
            # so Bash, Read... need a tool search first; without the beta and the flag every
            # tool sent is simply loaded.
            drops=(Drop("tools[].defer_loading"),),
            betas=("advanced-tool-use-*",),
            seen="zai-org/feedback#172",
        ),
        PassthroughProfile(
            name="minimax",
            label="MiniMax (/anthropic)",
            hosts=("api.minimax.io", "api.minimaxi.com"),
            # "invalid params, function name or parameters is empty (2013)" for the web
            # search server tool; "chat content has invalid message role: system (2013)".
            schemaless_tools=False,
            system_messages=False,
            seen="ding113/claude-code-hub#1262, MiniMax-AI/MiniMax-M2.7#43",
        ),
        PassthroughProfile(
            name="openrouter",
            label="OpenRouter (/api)",
            hosts=("openrouter.ai",),
            # Claude models served by Anthropic through OpenRouter: "x-anthropic-billing-
            # header is a reserved keyword and may not be used in the system prompt".
            billing_header=False,
            seen="farion1231/cc-switch#761",
        ),
        PassthroughProfile(
            name="vllm",
            label="vLLM",
            ports=(8000,),
            # Its request model requires `input_schema` on every tool (a 400 for server
            # tools) and ignores unknown fields (vllm/entrypoints/anthropic/protocol.py).
            schemaless_tools=False,
            seen="vllm-project/vllm anthropic/protocol.py",
        ),
        PassthroughProfile(
            name="llamacpp",
            label="llama.cpp server",
            ports=(8080,),
            # Took every field and beta listed above (pinned build, tests/realstack).
            seen="tested against llama-server e4e8927",
        ),
        PassthroughProfile(
            name="ollama",
            label="Ollama",
            hosts=("ollama.com",),
            ports=(11434,),
            # Go's decoder drops unknown fields; server tools become plain functions.
            seen="ollama/ollama anthropic/anthropic.go",
        ),
        PassthroughProfile(
            name="strict",
            label="Servers that refuse unknown fields (LiteLLM before Bedrock or Vertex, ...)",
            # "context_management: Extra inputs are not permitted", "Unexpected value(s)
            # `…` for the `anthropic-beta` header": what Claude Code's
            # CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS leaves out, done here.
            drops=(
                Drop("context_management"),
                Drop("speed"),
                Drop("diagnostics"),
                Drop("tools[].defer_loading"),
                Drop("tools[].eager_input_streaming"),
            ),
            betas=(
                "context-management-*",
                "advanced-tool-use-*",
                "fast-mode-*",
                "advisor-tool-*",
                "prompt-caching-scope-*",
            ),
            schemaless_tools=False,
            seen="anthropics/claude-code#14135, #46105; caozhiyuan/copilot-api#175",
        ),
    )
}


def by_name(name: str) -> PassthroughProfile:
    """The profile called `name` (as in `provider = "..."` with `mode = "anthropic"`)."""
    return providers.named(PROFILES, name, "pass-through provider")


@functools.lru_cache(maxsize=64)
def resolve(
    provider: str | None,
    base_url: str,
    fields: tuple[str, ...] = (),
    betas: tuple[str, ...] = (),
) -> PassthroughProfile:
    """The profile for a pass-through upstream: `provider` when configured, else detected from
    the base URL; with the configured drops added."""
    found = by_name(provider) if provider else providers.locate(PROFILES.values(), base_url)
    return (found or GENERIC).with_settings(fields, betas)


def coerce(value: PassthroughProfile | str | dict[str, Any] | None) -> PassthroughProfile:
    """A profile from what a recording kept: the object, its name, or its fields (as
    `dataclasses.asdict` wrote them, lists for tuples)."""
    if value is None:
        return GENERIC
    if isinstance(value, PassthroughProfile):
        return value
    if isinstance(value, str):
        return by_name(value)
    fields: dict[str, Any] = {k: v for k, v in value.items() if k in _FIELDS}
    fields["drops"] = tuple(
        Drop(d["path"], tuple(d["when"]) if d.get("when") else None)
        for d in fields.get("drops", ())
    )
    fields["betas"] = tuple(fields.get("betas", ()))
    for name in ("hosts", "ports"):
        fields[name] = tuple(fields.get(name, ()))
    return PassthroughProfile(**fields)


_FIELDS = {f.name for f in dataclasses.fields(PassthroughProfile)}
