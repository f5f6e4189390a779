"""The dialect seam: which dialect an upstream speaks, where its requests go, and the plan.

The translations themselves have their golden tests (test_request_golden, test_responses_dialect
...); here: the choice (`mode`, or `auto` by provider and model), the addresses (Azure's
Responses routes among them), what a plan sends, and the diagnosis of base URLs by dialect.
"""

from __future__ import annotations

import json

import pytest

from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core import dialects
from claude_bridge.proxy.core.endpoint import Endpoint
from claude_bridge.proxy.diagnose import diagnose
from claude_bridge.proxy.plan import plan

AZURE = "https://res.openai.azure.com/openai/deployments/gpt5-prod"
REQUEST = json.dumps(
    {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
).encode()


@pytest.mark.parametrize(
    ("mode", "base_url", "model", "expected"),
    [
        ("auto", "https://api.openai.com/v1", "gpt-4o", "openai"),
        ("auto", "https://api.openai.com/v1", "gpt-5-codex", "responses"),
        ("auto", "https://api.openai.com/v1", "o3-pro", "responses"),
        ("auto", "http://127.0.0.1:8080/v1", "gpt-5-codex", "openai"),  # not OpenAI's model
        ("openai", "https://api.openai.com/v1", "gpt-5-codex", "openai"),  # configured wins
        ("responses", "http://127.0.0.1:8080/v1", "qwen3", "responses"),
        ("anthropic", "http://127.0.0.1:8080", "qwen3", "anthropic"),
    ],
)
def test_the_dialect_is_the_mode_or_the_default_for_the_model(
    mode: str, base_url: str, model: str, expected: str
) -> None:
    assert dialects.choose(mode, None, base_url, model).name == expected


def test_each_dialect_addresses_its_endpoint() -> None:
    openai = Endpoint("https://api.openai.com/v1", "api.openai.com", "sk-1")
    chat, responses = dialects.DIALECTS["openai"], dialects.DIALECTS["responses"]
    assert chat.address(openai).url == "https://api.openai.com/v1/chat/completions"
    assert responses.address(openai).url == "https://api.openai.com/v1/responses"
    assert responses.address(openai).headers == {"authorization": "Bearer sk-1"}
    listing = responses.listing(openai)
    assert listing is not None and listing.url == "https://api.openai.com/v1/models"

    local = Endpoint("http://127.0.0.1:8080", "127.0.0.1:8080", "k")
    passthrough = dialects.DIALECTS["anthropic"]
    assert passthrough.address(local).url == "http://127.0.0.1:8080/v1/messages"
    assert passthrough.address(local).headers["anthropic-version"] == "2023-06-01"
    listing = passthrough.listing(local)
    assert listing is not None and listing.url == "http://127.0.0.1:8080/v1/models"


def test_azure_responses_go_to_the_resource_route_with_the_deployment_as_model() -> None:
    """A deployment URL has no Responses route under it (404): the resource's route with an
    `api-version`, `api-key` auth, and the deployment named in the body instead."""
    azure = Endpoint(AZURE, "res.openai.azure.com", "az-key", provider="azure")
    address = dialects.DIALECTS["responses"].address(azure)
    assert address.url.startswith("https://res.openai.azure.com/openai/responses?api-version=")
    assert address.headers == {"api-key": "az-key"}
    assert dialects.DIALECTS["responses"].listing(azure) is None  # one model a deployment

    settings = Settings(openai_base_url=AZURE, provider="azure", mode="responses", big_model="x")
    planned = plan(REQUEST, settings, settings.endpoints(), {})
    assert planned.dialect == "responses"
    assert isinstance(planned.body, dict) and planned.body["model"] == "gpt5-prod"
    assert planned.upstream_model == "x"  # what prices and windows go by


def test_a_plan_carries_its_dialect_and_a_pass_through_one_forwards_headers() -> None:
    settings = Settings(openai_base_url="http://127.0.0.1:8080", mode="anthropic")
    planned = plan(REQUEST, settings, settings.endpoints(), {})
    assert planned.dialect == "anthropic"
    assert isinstance(planned.body, dict) and planned.body["model"] == "claude-sonnet-4-5"
    client = {"anthropic-beta": "b1", "anthropic-version": "2023-06-01", "x-api-key": "client"}
    forwarded = planned.speaker.forwarded(client, planned.options)
    assert forwarded == {"anthropic-beta": "b1", "anthropic-version": "2023-06-01"}
    translated = Settings(openai_base_url="http://127.0.0.1:8080/v1", mode="responses")
    again = plan(REQUEST, translated, translated.endpoints(), {})
    assert again.speaker.forwarded(client, again.options) == {}
    assert isinstance(again.body, dict) and "input" in again.body
    assert again.ctx.input_estimate > 0


@pytest.mark.parametrize(
    ("mode", "path", "found"),
    [
        ("responses", "/v1/responses", "ends in /responses"),
        ("auto", "/v1/responses", "ends in /responses"),
        ("auto", "/v1/chat/completions", "ends in /chat/completions"),
        ("anthropic", "/v1/messages", "ends in /messages"),
    ],
)
def test_a_base_url_ending_in_the_dialect_s_endpoint_is_diagnosed(
    mode: str, path: str, found: str
) -> None:
    settings = Settings(openai_base_url=f"http://127.0.0.1:8080{path}", mode=mode)
    assert any(found in finding.problem for finding in diagnose(settings, offline=True))
