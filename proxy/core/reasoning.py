"""Where OpenAI-compatible servers put reasoning text: one source, never two.

OpenRouter and Avian send the same text in `reasoning` and `reasoning_details`; DeepSeek,
llama.cpp and xAI use `reasoning_content`; vLLM and Ollama `reasoning`.
"""

from __future__ import annotations

from typing import Any


def reasoning_text(
    delta: dict[str, Any] | Any, source: str | None = None
) -> tuple[str, str | None]:
    """(text, source) of the reasoning in a delta or message. Once a source gave text, only
    that source is read, so duplicates in a second field are ignored."""
    fields = ("reasoning_details", "reasoning_content", "reasoning")
    for name in (source,) if source else fields:
        value = _get(delta, name)
        if not value:  # most deltas have none: nothing to join (this runs on every chunk)
            continue
        if name == "reasoning_details":
            text = "".join(
                d.get("text") or ""
                for d in value or ()
                if isinstance(d, dict) and d.get("type") == "reasoning.text"
            )
            if text or (source and value):
                return text, name
        elif isinstance(value, str) and value:
            return value, name
    return "", source


def reasoning_signature(delta: dict[str, Any] | Any) -> str | None:
    """A real signature (OpenRouter serving Claude) when the upstream sends one."""
    for detail in _get(delta, "reasoning_details") or ():
        if isinstance(detail, dict) and detail.get("signature"):
            return str(detail["signature"])
    return None


def redacted_reasoning(delta: dict[str, Any] | Any) -> list[str]:
    """Claude-format encrypted reasoning, shown to Anthropic clients as redacted_thinking."""
    return encrypted_reasoning(_get(delta, "reasoning_details"))[0]


def tool_signatures(details: Any) -> dict[str, dict[str, Any]]:
    """Encrypted details keyed by a tool call id: the calls' thought signatures (OpenRouter
    serving Gemini), to be sent back with those calls."""
    return encrypted_reasoning(details)[1]


def encrypted_reasoning(details: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Both kinds of `reasoning.encrypted` details in one pass: the data of Claude-format ones
    (redacted thinking), and the others that name a tool call id, by that id."""
    redacted: list[str] = []
    signatures: dict[str, dict[str, Any]] = {}
    if not isinstance(details, list):
        return redacted, signatures
    for d in details:
        if not isinstance(d, dict) or d.get("type") != "reasoning.encrypted":
            continue
        if str(d.get("format", "")).startswith("anthropic"):
            if d.get("data"):
                redacted.append(str(d["data"]))
        elif isinstance(d.get("id"), str) and d["id"]:
            signatures[d["id"]] = d
    return redacted, signatures


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
