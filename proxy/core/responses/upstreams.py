"""Which upstreams speak the Responses dialect, and where (PROTOCOL.md 10.1, 10.2, 10.12).

Data for the dialect seam to read, kept apart from `providers.py` (the Chat Completions rules):
the models OpenAI serves only on `/v1/responses`, what the servers that implement it refuse, and
the Responses URL under a configured base URL, Azure's included. Servers that implement it
(README): OpenAI, Azure, DeepSeek, Ollama from 0.13.3 (stateless), LM Studio from 0.3.29, vLLM,
llama.cpp's llama-server; each is reached by pointing the base URL at it with `mode = "responses"`.
"""

from __future__ import annotations

import re
from typing import Literal

Dialect = Literal["openai", "responses"]

RESPONSES_ONLY_MODELS = re.compile(
    r"(^|/)("
    r"o1-pro|o3-pro|o3-deep-research|o4-mini-deep-research|computer-use-preview"
    r"|gpt-5(\.\d+)?-pro|gpt-5\.\d+-cyber|gpt-daybreak"
    r"|[\w.-]*codex"  # every codex model: gpt-5-codex, gpt-5.1-codex-max, codex-mini-latest
    r")",
    re.IGNORECASE,
)
"""OpenAI models that answer Chat Completions with "This model is only supported in
v1/responses": the openai-python `ResponsesModel` ids missing from its `ChatModel` literal, and
every codex variant (gateways document them all as Responses-only). A type hint, not a contract:
the configured mode always wins."""

EMPTY_REASONING_REJECTED = frozenset(("llamacpp",))
"""Servers that refuse a replayed reasoning item with neither summary nor content
("Cannot determine type of 'item'"): such items are left out of their requests."""

AZURE_RESPONSES_API_VERSION = "2025-04-01-preview"
"""For Azure's older `/openai/responses` route, which needs an `api-version` (summaries need
this one or later); the v1 surface (`/openai/v1/responses`) takes none."""


def default_dialect(profile: str, model: str) -> Dialect:
    """The dialect for an upstream whose `mode` is not configured: Responses for OpenAI's
    Responses-only models, Chat Completions for everything else."""
    if profile == "openai" and RESPONSES_ONLY_MODELS.search(model):
        return "responses"
    return "openai"


def responses_url(base_url: str, profile: str, api_version: str | None = None) -> str:
    """`<base>/responses`, the query kept. Azure: a deployment base URL
    (`…/openai/deployments/<name>`, what Chat Completions uses) has no Responses route under it
    (404), so it becomes the resource's `/openai/responses?api-version=…`; a bare resource URL
    or `…/openai` gets the v1 surface, `/openai/v1/responses`."""
    base, _, query = base_url.partition("?")
    base = base.rstrip("/")
    params = [p for p in query.split("&") if p]
    if profile == "azure":
        root, deployment, _ = base.partition("/openai/deployments/")
        if deployment:
            if not any(p.startswith("api-version=") for p in params):
                params.append(f"api-version={api_version or AZURE_RESPONSES_API_VERSION}")
            base = root + "/openai"
        elif not base.endswith("/openai/v1"):
            base = base.removesuffix("/openai") + "/openai/v1"
    url = base + "/responses"
    return url + ("?" + "&".join(params) if params else "")


def azure_deployment(base_url: str) -> str | None:
    """The deployment named in an Azure deployment base URL: on the Responses route it goes in
    the body's `model` instead."""
    path = base_url.partition("?")[0]
    _, found, rest = path.partition("/openai/deployments/")
    name = rest.split("/", 1)[0]
    return name if found and name else None
